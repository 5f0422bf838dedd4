"""The transformers backend on the tiny random Qwen3-VL judges (CPU): the numbers themselves.

Random weights judge nothing; these tests check the machinery: the two-token reading of 10
against explicit full-sequence scoring, batched equals unbatched, and honest generate mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL.Image import Image

from reward_service.backends.base import (
    BackendSpec,
    GeneratedText,
    JudgeItem,
    JudgeQuestion,
    Mode,
    ScoreTokenLogprobs,
)
from reward_service.backends.transformers_backend import PreparedBatch, TransformersJudgeBackend
from reward_service.parsing import parse_score
from reward_service.scorer import read_output
from reward_service.scoring import expected_score, score_log_probs
from shared_schemas import ScoreScale
from tests.support.images import make_image
from tests.support.judge_items import alone, chat_content, pairs
from tiny_models.qwen3_vl import TINY_RECIPE_VERSION, chat_template

pytestmark = pytest.mark.tiny

EXPECTED_ANSWER = "Answer with one integer from 0 to 10 and nothing else."


def load(cache: Path, model: str) -> TransformersJudgeBackend:
    backend = TransformersJudgeBackend(BackendSpec("transformers", model, None, "auto", str(cache)))
    backend.load("cpu")
    return backend


@pytest.fixture(scope="module")
def judge(model_cache: Path) -> Iterator[TransformersJudgeBackend]:
    backend = load(model_cache, "tiny")
    yield backend
    backend.release()


def images(seed: int) -> tuple[Image, Image]:
    """An item's source and edited images; they differ in size between seeds."""
    return make_image(64, 64, seed), make_image(48 + 16 * (seed % 3), 64, seed + 50)


def ask(seed: int, mode: Mode = "expected", words: int = 0, **changes: Any) -> JudgeQuestion:
    """Questions that differ in prompt length and so in padding; images 0 and 1 of the item."""
    fields: dict[str, Any] = {
        "key": f"test/{seed}",
        "system": "You are a professional digital artist.",
        "content": (
            "Source image:",
            0,
            "Edited image:",
            1,
            "Editing instruction: make the sky red. " + "Be strict. " * words + EXPECTED_ANSWER,
        ),
        "mode": mode,
        "max_new_tokens": 12 if mode == "generate" else 0,
    }
    fields.update(changes)
    return JudgeQuestion(**fields)


def question(
    seed: int, mode: Mode = "expected", words: int = 0, **changes: Any
) -> JudgeItem[Image]:
    """An item with one question on its two images."""
    return JudgeItem(images(seed), (ask(seed, mode, words, **changes),))


def run(judge: TransformersJudgeBackend, batch: list[JudgeItem[Image]]) -> list[Any]:
    return list(judge.score(judge.prepare(batch)))


def reference_inputs(
    judge: TransformersJudgeBackend, item: JudgeItem[Image], q: JudgeQuestion
) -> Any:
    """The question's prompt through the processor's own chat template, apart from the backend."""
    content = chat_content(item, q)
    messages = [{"role": "system", "content": q.system}, {"role": "user", "content": content}]
    return judge.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def last_token_logprobs(judge: TransformersJudgeBackend, inputs: Any, append: list[int]) -> Any:
    """log P(next token) after the prompt plus ``append``: one full prefill, no cache reuse."""
    extra = torch.tensor([append], dtype=inputs["input_ids"].dtype)
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    full["mm_token_type_ids"] = torch.cat(
        [
            inputs["mm_token_type_ids"],
            torch.zeros_like(extra, dtype=inputs["mm_token_type_ids"].dtype),
        ],
        dim=1,
    )
    with torch.inference_mode():
        logits = judge.model(**full, use_cache=False).logits[0, -1]
    return logits.float().log_softmax(-1)


def test_expected_scores_lie_in_0_to_10_and_differ_between_inputs(
    judge: TransformersJudgeBackend,
) -> None:
    outputs = run(judge, [question(seed, words=seed) for seed in range(4)])
    scores = [read_output("q", output) for output in outputs]
    for score in scores:
        assert score.score is not None and 0.0 <= score.score <= 10.0
        assert score.distribution is not None and sum(score.distribution) == pytest.approx(1.0)
        assert score.score_mass is not None and 0.0 < score.score_mass <= 1.0
    assert len({round(s.score or 0, 6) for s in scores}) > 1


def shared_prefix_batch(edited_alone: bool = False) -> list[JudgeItem[Image]]:
    """Two items asked two questions each on the same images and, with ``edited_alone``, two
    more on the edited image alone (viescore's shape: that image is in two prefixes); and a lone
    question."""
    batch = []
    for seed in (1, 2):
        both, edited = ("Source image:", 0, "Edited image:", 1), ("Image:", 1)
        shown_asks = [(both, "success", 0), (both, "overediting", 2 + seed)]
        if edited_alone:
            shown_asks += [(edited, "naturalness", 1), (edited, "artifacts", seed)]
        questions = []
        for shown, name, words in shown_asks:
            text = f"Rate the {name}. " + "Be strict. " * words + EXPECTED_ANSWER
            questions.append(ask(seed, key=f"test/{seed}/{name}", content=(*shown, text)))
        batch.append(
            JudgeItem((make_image(64, 64, seed), make_image(48, 64, seed + 50)), tuple(questions))
        )
    batch.append(question(7, words=5))
    return batch


# batch, questions that share a prefix, images encoded once for two prefixes, prefill passes
LAYOUTS = {
    "alone": (lambda: [question(seed, words=3 * seed) for seed in range(3)], 0, 0, 0),
    "shared": (shared_prefix_batch, 2, 0, 1),
    "reused": (
        lambda: shared_prefix_batch(edited_alone=True),
        4,
        2,
        2,
    ),  # one-image prefixes are not padded to two
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_two_digit_reading_equals_explicit_full_prefills(
    judge: TransformersJudgeBackend, layout: str
) -> None:
    # Batched with prompts of other lengths (left padding), with and without shared prefixes and
    # images encoded once for two prefixes: position -2 must be the answer's first token,
    # position -1 the token after "1".
    make_batch, shared, reused, passes = LAYOUTS[layout]
    batch = make_batch()
    prepared = judge.prepare(batch)
    assert isinstance(prepared, PreparedBatch)
    assert (prepared.shared_prefixes, prepared.reused_images) == (shared, reused)
    assert sum(len(getattr(g, "buckets", [])) for g in prepared.groups) == passes
    outputs = list(judge.score(prepared))
    one, zero = judge.digit_ids[1], judge.digit_ids[0]
    end = judge.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for (item, q), output in zip(pairs(batch), outputs, strict=True):
        assert isinstance(output, ScoreTokenLogprobs)
        inputs = reference_inputs(judge, item, q)
        first = last_token_logprobs(judge, inputs, [])
        after_one = last_token_logprobs(judge, inputs, [one])
        digits = judge.digit_ids
        assert output.first == pytest.approx(first[digits].tolist(), abs=2e-4)
        assert output.after_one == pytest.approx(after_one[digits].tolist(), abs=2e-4)
        # P(10) is the probability of the full sequence "1","0"; P(1) covers "1", end.
        log_probs = score_log_probs(output.first, output.after_one)
        assert log_probs[10] == pytest.approx(float(first[one] + after_one[zero]), abs=2e-4)
        one_then_end = float(first[one] + after_one[end])
        assert log_probs[1] >= one_then_end - 1e-4
        assert math.exp(log_probs[1]) <= math.exp(float(first[one])) + 1e-9


@pytest.mark.parametrize(("low", "high"), [(1, 5), (0, 25)])
def test_expected_mode_reads_a_distribution_over_any_integer_scale(
    judge: TransformersJudgeBackend, low: int, high: int
) -> None:
    # On 0..25 the digits after "1" and after "2" are read (12, 25 = two tokens), each equal to
    # an explicit full prefill; on 1..5 the first digit alone. Batched with a 0..10 question.
    batch = shared_prefix_batch()
    scaled = [
        JudgeItem(item.images, tuple(replace(q, scale=(low, high)) for q in item.questions))
        for item in batch[:2]
    ]
    outputs = run(judge, [*scaled, batch[2]])
    digits = judge.digit_ids
    for (item, q), output in zip(pairs(scaled), outputs, strict=False):
        assert isinstance(output, ScoreTokenLogprobs)
        inputs = reference_inputs(judge, item, q)
        first = last_token_logprobs(judge, inputs, [])
        assert output.first == pytest.approx(first[digits].tolist(), abs=2e-4)
        for lead in q.leads:
            after = last_token_logprobs(judge, inputs, [digits[lead]])
            assert output.after[lead] == pytest.approx(after[digits].tolist(), abs=2e-4)
        score = read_output("q", output, ScoreScale(min=low, max=high))
        assert score.distribution is not None and len(score.distribution) == high - low + 1
        assert sum(score.distribution) == pytest.approx(1.0)
        assert score.score is not None and low <= score.score <= high
        assert score.score_mass is not None and 0.0 < score.score_mass <= 1.0
    assert next(q.leads for _, q in pairs(scaled)) == ((1, 2) if high == 25 else ())
    assert isinstance(outputs[-1], ScoreTokenLogprobs) and outputs[-1].after_other == ()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched_expected_scores_equal_unbatched(
    judge: TransformersJudgeBackend, layout: str
) -> None:
    batch = LAYOUTS[layout][0]()
    together = run(judge, batch)
    apart = [run(judge, alone(item, q))[0] for item, q in pairs(batch)]
    for batched, single in zip(together, apart, strict=True):
        assert batched.first == pytest.approx(single.first, abs=1e-3)
        assert batched.after_one == pytest.approx(single.after_one, abs=1e-3)
        a = expected_score(batched.first, batched.after_one)
        b = expected_score(single.first, single.after_one)
        assert a is not None and b is not None
        assert a.score == pytest.approx(b.score, abs=1e-3)


def test_batched_generation_equals_unbatched(judge: TransformersJudgeBackend) -> None:
    batch = [question(seed, "generate", words=seed) for seed in range(3)]
    together = run(judge, batch)
    apart = [run(judge, [item])[0] for item in batch]
    assert [o.text for o in together] == [o.text for o in apart]
    assert all(isinstance(o, GeneratedText) and 0 < o.new_tokens <= 12 for o in together)


def test_junk_from_the_tiny_judge_is_recorded_unscored_with_its_text(
    judge: TransformersJudgeBackend,
) -> None:
    outputs = run(judge, [question(seed, "generate", max_new_tokens=24) for seed in range(4)])
    scores = [read_output("q", output) for output in outputs]
    for output, score in zip(outputs, scores, strict=True):
        assert score.raw_text == output.text
        assert score.score == parse_score(output.text).score
        assert (score.score is None) == (score.error is not None)
    assert any(score.score is None for score in scores)  # random weights write no score


def test_a_mixed_batch_answers_each_question_in_its_own_mode(
    judge: TransformersJudgeBackend,
) -> None:
    batch = [question(0), question(1, "generate"), question(2), question(3, "generate")]
    outputs = run(judge, batch)
    kinds = [type(o) for o in outputs]
    assert kinds == [ScoreTokenLogprobs, GeneratedText, ScoreTokenLogprobs, GeneratedText]
    assert outputs[0].first == pytest.approx(run(judge, [batch[0]])[0].first, abs=1e-3)


def test_the_tiny_folder_is_built_once_and_loaded_back_the_same(
    judge: TransformersJudgeBackend, model_cache: Path
) -> None:
    folders = sorted(p.name for p in model_cache.glob("tiny-qwen3-vl-dense-*") if p.is_dir())
    assert folders == [f"tiny-qwen3-vl-dense-v{TINY_RECIPE_VERSION}"]
    again = load(model_cache, "tiny")
    assert type(again.model).__name__ == "Qwen3VLForConditionalGeneration"
    q = question(5)
    assert run(again, [q])[0].first == pytest.approx(run(judge, [q])[0].first, abs=1e-5)


def test_config_token_ids_are_the_tokenizers(judge: TransformersJudgeBackend) -> None:
    config, tokenizer = judge.model.config, judge.processor.tokenizer
    for name, attribute in [
        ("<|image_pad|>", "image_token_id"),
        ("<|vision_start|>", "vision_start_token_id"),
        ("<|vision_end|>", "vision_end_token_id"),
    ]:
        assert getattr(config, attribute) == tokenizer.convert_tokens_to_ids(name)
    assert config.text_config.vocab_size >= len(tokenizer)
    assert [tokenizer.decode([i]) for i in judge.digit_ids] == [str(d) for d in range(10)]


def test_our_chat_template_renders_like_qwen3_vl(judge: TransformersJudgeBackend) -> None:
    assert judge.processor.chat_template == chat_template()
    messages = [
        {"role": "system", "content": "Judge."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "A:"},
                {"type": "image"},
                {"type": "text", "text": "Rate it."},
            ],
        },
    ]
    rendered = judge.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert rendered == (
        "<|im_start|>system\nJudge.<|im_end|>\n"
        "<|im_start|>user\nA:<|vision_start|><|image_pad|><|vision_end|>Rate it.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_the_moe_tiny_judge_loads_and_scores(model_cache: Path) -> None:
    moe = load(model_cache, "tiny-moe")
    assert type(moe.model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    batch = [question(0), question(1, words=5)]
    together = run(moe, batch)
    apart = [run(moe, [item])[0] for item in batch]
    for batched, single in zip(together, apart, strict=True):
        assert batched.first == pytest.approx(single.first, abs=1e-3)
        result = expected_score(batched.first, batched.after_one)
        assert result is not None and 0.0 <= result.score <= 10.0


def test_a_local_model_folder_loads_through_the_same_path(
    judge: TransformersJudgeBackend, model_cache: Path
) -> None:
    folder = model_cache / f"tiny-qwen3-vl-dense-v{TINY_RECIPE_VERSION}"
    local = TransformersJudgeBackend(
        BackendSpec("transformers", str(folder), None, "auto", str(model_cache))
    )
    info = local.load("cpu")
    assert (info.source, info.id, info.meaningful) == ("local", str(folder), True)
    assert info.revision is not None and info.revision.startswith("sha256:")
    q = question(6)
    assert run(local, [q])[0].first == pytest.approx(run(judge, [q])[0].first, abs=1e-5)


def test_a_question_on_five_images_reads_them_in_its_order_as_the_processor_does(
    judge: TransformersJudgeBackend,
) -> None:
    """A multi-image item (source, edit, two further inputs, a reference; images named out of
    their item order, as the kris temporal layout names them), batched beside a two-image item:
    the answer is the processor's own chat template's, one full prefill, images in place."""
    pictures = tuple(make_image(32 + 16 * (n % 3), 48, 60 + n) for n in range(5))
    multi = JudgeQuestion(
        key="test/multi",
        system="You are a professional digital artist.",
        content=(
            "Frame 1 (Generated):", 1, "Frame 2 (Reference):", 0, "Frame 3 (Reference):", 2,
            "Frame 4 (Reference):", 3, "Ground truth:", 4, "Rate it. " + EXPECTED_ANSWER,
        ),
        mode="expected",
    )  # fmt: skip
    item = JudgeItem(pictures, (multi,))
    output, _ = run(judge, [item, question(3, words=2)])
    assert isinstance(output, ScoreTokenLogprobs)
    first = last_token_logprobs(judge, reference_inputs(judge, item, multi), [])
    assert output.first == pytest.approx(first[judge.digit_ids].tolist(), abs=2e-4)
    # The order matters: the same labels and images, the images in their item order, give
    # another answer.
    ordered = replace(
        multi, content=tuple(multi.content[k] if k % 2 == 0 else k // 2 for k in range(11))
    )
    other = last_token_logprobs(judge, reference_inputs(judge, item, ordered), [])
    assert not torch.allclose(first[judge.digit_ids], other[judge.digit_ids])


def real_ids(ids: Any, mask: Any) -> list[int]:
    return [int(t) for t, m in zip(ids.tolist(), mask.tolist(), strict=True) if m]


def test_the_text_a_prefixs_questions_begin_with_joins_the_prefix(
    judge: TransformersJudgeBackend,
) -> None:
    from reward_service.backends.hf.planning import ExpectedGroup, common_run

    batch = shared_prefix_batch(edited_alone=True)
    planner = judge.planner
    kept = planner.options
    try:
        planner.options = replace(kept, common_text=False)
        (before,) = judge.prepare(batch).groups
        planner.options = replace(kept, common_text=True)
        (after,) = judge.prepare(batch).groups
    finally:
        planner.options = kept
    assert isinstance(before, ExpectedGroup) and isinstance(after, ExpectedGroup)
    assert before.prefix_of == after.prefix_of and after.prefix_of is not None
    moved = 0
    for row in range(len(after.prefixes["input_ids"])):
        questions = [q for q, r in enumerate(after.prefix_of) if r == row]
        old = [real_ids(before.suffix_ids[q], before.suffix_mask[q]) for q in questions]
        new = [real_ids(after.suffix_ids[q], after.suffix_mask[q]) for q in questions]
        common = old[0][: len(old[0]) - len(new[0])]
        ids_before = real_ids(
            before.prefixes["input_ids"][row], before.prefixes["attention_mask"][row]
        )
        ids_after, mask = after.prefixes["input_ids"][row], after.prefixes["attention_mask"][row]
        types = real_ids(after.prefixes["mm_token_type_ids"][row], mask)
        ids_after = real_ids(ids_after, mask)
        assert ids_after == ids_before + common  # the prefix row carries the common ids
        assert all(o == common + n for o, n in zip(old, new, strict=True))
        assert all(len(n) >= 2 for n in new)  # each keeps its last two tokens
        assert len(types) == len(ids_after) and not any(types[len(ids_before) :])  # text
        if len(questions) == 1:
            assert common == []  # a prefix with one question is untouched
        else:
            assert common_run(new) == 0  # nothing common is left behind
            moved += len(common)
    assert moved > 0
    assert common_run([[1, 2, 3, 4], [1, 2, 3, 5]]) == 2  # at most len - 2
    assert common_run([[1, 2, 3, 4, 5], [1, 2, 9, 4, 5]]) == 2
