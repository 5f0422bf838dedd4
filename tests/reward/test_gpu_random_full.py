"""The full-size random judge (Qwen3-VL-30B-A3B's architecture) on a GPU: builds and scores.

Run on a GPU machine: ``pytest -m gpu tests/reward``. Skipped where CUDA is absent. The judge is
loaded in deterministic mode (deterministic kernels, items planned alone); the tests of the
batched path turn item isolation off for their own batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

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
from reward_service.backends.transformers_backend import TransformersJudgeBackend
from reward_service.scoring import expected_score
from tests.support.determinism import differences, judge_items, placements, score_items
from tests.support.images import make_image

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersJudgeBackend]:
    cache = str(tmp_path_factory.mktemp("cache"))
    backend = TransformersJudgeBackend(
        BackendSpec("transformers", "random-full", None, "auto", cache, deterministic=True)
    )
    assert backend.load("cuda:0").deterministic
    yield backend
    backend.release()


@pytest.fixture
def batched(judge: TransformersJudgeBackend) -> Iterator[TransformersJudgeBackend]:
    """The judge with items batched together (deterministic mode's isolation off)."""
    configured = judge.planner.options
    judge.planner.options = replace(configured, isolate_items=False)
    yield judge
    judge.planner.options = configured


def question(seed: int, mode: Mode = "expected") -> JudgeItem[Image]:
    text = f"Editing instruction: make the sky red {'and the grass blue ' * seed}\n\n"
    text += "Answer with one integer from 0 to 10 and nothing else."
    images = (make_image(1024, 1024, seed), make_image(1024, 768, seed + 50))
    return JudgeItem(
        images, (JudgeQuestion(f"gpu/{seed}", "You are a judge.", (0, 1, text), mode, 8),)
    )


def test_random_full_has_the_real_architecture(judge: TransformersJudgeBackend) -> None:
    config = judge.model.config
    assert type(judge.model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert (config.text_config.num_hidden_layers, config.text_config.num_experts) == (48, 128)
    assert config.vision_config.deepstack_visual_indexes == [8, 16, 24]
    params = sum(p.numel() for p in judge.model.parameters())
    assert 30.5e9 < params < 31.5e9
    assert next(judge.model.parameters()).dtype == torch.bfloat16


def test_a_batch_scores_like_its_questions_alone_within_bf16_noise(
    batched: TransformersJudgeBackend,
) -> None:
    judge = batched
    batch = [question(seed) for seed in range(3)]
    together = judge.score(judge.prepare(batch))
    alone = [judge.score(judge.prepare([q]))[0] for q in batch]
    for batched, single in zip(together, alone, strict=True):
        assert isinstance(batched, ScoreTokenLogprobs) and isinstance(single, ScoreTokenLogprobs)
        a = expected_score(batched.first, batched.after_one)
        b = expected_score(single.first, single.after_one)
        assert a is not None and b is not None
        assert 0.0 <= a.score <= 10.0
        assert a.score == pytest.approx(b.score, abs=0.1)


def test_generate_mode_runs_greedily(judge: TransformersJudgeBackend) -> None:
    outputs = judge.score(judge.prepare([question(0, "generate"), question(1, "generate")]))
    assert all(isinstance(o, GeneratedText) and 0 < o.new_tokens <= 8 for o in outputs)


def test_viescore_savings_score_like_the_padded_pass_within_bf16_noise(
    batched: TransformersJudgeBackend,
) -> None:
    judge = batched
    # viescore's shape: two questions on (source, edited), two on the edited image alone.
    batch = []
    for seed in (1, 2):
        images = (make_image(1024, 1024, seed), make_image(1024, 1024, seed + 50))
        ask = "Answer with one integer from 0 to 10 and nothing else."
        questions = [
            JudgeQuestion(f"v/{seed}/{name}", "You judge.", (0, 1, f"{name}? {ask}"), "expected", 0)
            for name in ("success", "overediting")
        ] + [
            JudgeQuestion(f"v/{seed}/{name}", "You judge.", (1, f"{name}? {ask}"), "expected", 0)
            for name in ("naturalness", "artifacts")
        ]
        batch.append(JudgeItem(images, tuple(questions)))
    prepared = judge.prepare(batch)
    assert (prepared.shared_prefixes, prepared.reused_images) == (4, 2)
    assert [len(getattr(g, "buckets", [])) for g in prepared.groups] == [2]
    saved = judge.score(prepared)
    configured = judge.planner.options
    judge.planner.options = replace(configured, reuse_images=False, split_prefixes=False)
    try:
        padded = judge.score(judge.prepare(batch))
    finally:
        judge.planner.options = configured
    for a, b in zip(saved, padded, strict=True):
        assert isinstance(a, ScoreTokenLogprobs) and isinstance(b, ScoreTokenLogprobs)
        x, y = expected_score(a.first, a.after_one), expected_score(b.first, b.after_one)
        assert x is not None and y is not None
        assert x.score == pytest.approx(y.score, abs=0.1)


# Deterministic mode (issue 19): (protocol, mode, items), at least 16 questions each.
CASES = [("single", "expected", 16), ("viescore", "expected", 4), ("single", "generate", 16)]


def side(seed: int) -> tuple[int, int]:
    return 512, 512 - 128 * (seed % 2)


@pytest.mark.parametrize(("protocol", "mode", "count"), CASES)
def test_deterministic_answers_are_bit_identical_in_every_placement(
    judge: TransformersJudgeBackend, protocol: str, mode: str, count: int
) -> None:
    items = judge_items(score_items(range(count), side), protocol, mode, max_new_tokens=8)
    partners = judge_items(score_items(range(100, 108), side), protocol, mode, max_new_tokens=8)
    found = placements(judge, items, partners)
    assert differences(found) == {name: [] for name in found}
    if mode == "expected":
        answers = [answer for item in found["alone"] for answer in item]
        assert len(set(answers)) == len(answers)
