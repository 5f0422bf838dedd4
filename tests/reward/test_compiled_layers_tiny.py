"""The judge's compiled layers, grouped vision attention and linear patch embedding (issue 30) on
the tiny MoE judge (CPU).

Compiled with inductor, as on the GPU: answers equal the eager layers' within a float32 tolerance,
the warm-up at load compiles every graph (no recompiles for new batch sizes, image sizes, shared
prefixes or generate steps afterwards), deterministic mode stays bit-identical in every placement
with compile on, a compile that fails at load leaves a judge that runs eagerly and says so, and
the defaults follow the device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from reward_service.backends.base import (
    BackendSpec,
    GeneratedText,
    JudgeItem,
    QuestionOutput,
    ScoreTokenLogprobs,
)
from reward_service.backends.hf.compiled_layers import LayerOptions, _runs, layer_options
from reward_service.backends.transformers_backend import TransformersJudgeBackend
from tests.support.determinism import differences, judge_items, placements, score_items

pytestmark = pytest.mark.tiny

MODEL = "tiny-moe"
TOLERANCE = 1e-3  # natural-log probability, float32: measured worst 9.3e-5 when written
CUDA_DEFAULTS = {"compile": True, "vision_attention": "grouped", "patch_embed": "linear"}


def size(seed: int) -> tuple[int, int]:
    return 48 + 16 * (seed % 3), 64


def load(cache: Path, options: dict[str, Any], deterministic: bool = False) -> Any:
    spec = BackendSpec(
        "transformers", MODEL, None, "auto", str(cache), options, deterministic=deterministic
    )
    backend = TransformersJudgeBackend(spec)
    info = backend.load("cpu")
    return backend, info


@pytest.fixture(scope="module")
def eager(model_cache: Path) -> Iterator[TransformersJudgeBackend]:
    backend, info = load(model_cache, {})
    assert "compile" not in info.details  # the CPU's default: transformers' own layers
    yield backend
    backend.release()


@pytest.fixture(scope="module")
def compiled(model_cache: Path) -> Iterator[tuple[TransformersJudgeBackend, Any, dict[str, int]]]:
    from torch._dynamo.utils import counters

    before = dict(counters["stats"])
    backend, info = load(model_cache, CUDA_DEFAULTS)
    warmed = {key: value - before.get(key, 0) for key, value in counters["stats"].items()}
    yield backend, info, warmed
    backend.release()


def batches(protocol: str, mode: str, sizes: list[int]) -> list[list[JudgeItem[Any]]]:
    """Batches of these many items (distinct images and sizes, prompts of different lengths)."""
    found, seed = [], 0
    for count in sizes:
        found.append(judge_items(score_items(range(seed, seed + count), size), protocol, mode))
        seed += count
    return found


def answers(backend: TransformersJudgeBackend, batch: list[JudgeItem[Any]]) -> list[QuestionOutput]:
    return list(backend.score(backend.prepare(batch)))


def worst_difference(a: list[QuestionOutput], b: list[QuestionOutput]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert isinstance(x, ScoreTokenLogprobs) and isinstance(y, ScoreTokenLogprobs)
        for p, q in zip(x.first + x.after_one, y.first + y.after_one, strict=True):
            worst = max(worst, abs(p - q))
    return worst


CASES = [("single", "expected", [1, 3]), ("viescore", "expected", [1, 2])]


@pytest.mark.parametrize(("protocol", "mode", "sizes"), CASES)
def test_compiled_layers_answer_as_eager_within_float_noise(
    eager: TransformersJudgeBackend,
    compiled: tuple[TransformersJudgeBackend, Any, dict[str, int]],
    protocol: str,
    mode: str,
    sizes: list[int],
) -> None:
    for batch in batches(protocol, mode, sizes):
        reference, found = answers(eager, batch), answers(compiled[0], batch)
        assert len(found) == len(reference) > 0
        assert all(
            math.isfinite(v) for a in found if isinstance(a, ScoreTokenLogprobs) for v in a.first
        )
        assert worst_difference(found, reference) < TOLERANCE


def test_compiled_generate_mode_answers_text(
    compiled: tuple[TransformersJudgeBackend, Any, dict[str, int]],
) -> None:
    (batch,) = batches("single", "generate", [3])
    found = answers(compiled[0], batch)
    assert len(found) == 3
    assert all(isinstance(a, GeneratedText) and a.new_tokens >= 1 for a in found)


def test_the_warm_up_compiles_every_graph_so_new_batch_shapes_never_recompile(
    compiled: tuple[TransformersJudgeBackend, Any, dict[str, int]],
) -> None:
    from torch._dynamo.utils import counters

    backend, _, warmed = compiled
    assert warmed.get("unique_graphs", 0) > 0  # the load compiled
    before = dict(counters["stats"])
    shapes = [
        *batches("single", "expected", [1, 2, 5]),
        *batches("viescore", "expected", [1, 3]),
        *batches("single", "generate", [1, 2]),
    ]
    for batch in shapes:
        answers(backend, batch)
    assert counters["stats"].get("unique_graphs", 0) == before.get("unique_graphs", 0)
    assert backend._layers is not None and backend._layers.new_graphs() == 0
    assert counters["stats"].get("calls_captured", 0) == before.get("calls_captured", 0)


def test_a_second_load_a_hand_over_compiles_nothing_and_answers_the_same(
    compiled: tuple[TransformersJudgeBackend, Any, dict[str, int]], model_cache: Path
) -> None:
    from torch._dynamo.utils import counters

    (batch,) = batches("viescore", "expected", [2])
    first = answers(compiled[0], batch)
    before = counters["stats"].get("unique_graphs", 0)
    again, info = load(model_cache, CUDA_DEFAULTS)
    try:
        assert info.details["compile"] == "regional (inductor)"
        assert counters["stats"].get("unique_graphs", 0) == before
        assert answers(again, batch) == first
    finally:
        again.release()


def test_a_graph_compiled_inside_a_request_is_logged(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from reward_service.backends.hf import warm_up

    whole = warm_up.warm_up_batches
    monkeypatch.setattr(warm_up, "warm_up_batches", lambda: whole()[:1])  # one prompt only
    options = {**CUDA_DEFAULTS, "compile_backend": "aot_eager"}  # quick to compile
    backend, _ = load(model_cache, options)
    try:
        with caplog.at_level(logging.WARNING):
            answers(backend, whole()[0])  # the warm-up's own shape: nothing new
            assert "new graph" not in caplog.text
            answers(backend, whole()[1])  # two prompts: a batch size the warm-up did not see
        assert "new graph(s) for a batch of 2 after the warm-up" in caplog.text
    finally:
        backend.release()


def test_the_loaded_model_names_its_layer_options(
    compiled: tuple[TransformersJudgeBackend, Any, dict[str, int]],
) -> None:
    _, info, _ = compiled
    assert info.details["compile"] == "regional (inductor)"
    assert info.details["vision_attention"] == "grouped"
    assert info.details["patch_embed"] == "linear"
    assert info.details["prefix_passes"] == "folded"
    assert info.details["prefix_common_text"] == "on"


@pytest.mark.parametrize(
    "options",
    [{"vision_attention": "grouped"}, {"patch_embed": "linear"}],
    ids=["grouped vision attention", "linear patch embedding"],
)
def test_the_uncompiled_options_answer_as_transformers_layers(
    eager: TransformersJudgeBackend, model_cache: Path, options: dict[str, str]
) -> None:
    backend, info = load(model_cache, {"compile": False, **options})
    try:
        assert info.details["compile"] == "off"
        assert {info.details[name] for name in options} == set(options.values())
        for batch in batches("viescore", "expected", [3]):  # images of several sizes
            assert worst_difference(answers(backend, batch), answers(eager, batch)) < TOLERANCE
    finally:
        backend.release()


def test_a_compile_that_fails_at_load_leaves_an_eager_judge_that_says_so(
    eager: TransformersJudgeBackend, model_cache: Path
) -> None:
    from torch._dynamo import register_backend

    def failing(graph: Any, inputs: Any) -> Any:
        raise RuntimeError("this backend compiles nothing")

    register_backend(failing, name="editbench_failing")
    backend, info = load(model_cache, {**CUDA_DEFAULTS, "compile_backend": "editbench_failing"})
    try:
        assert info.details["compile"].startswith("off (failed at warm-up:")
        (batch,) = batches("single", "expected", [2])
        assert worst_difference(answers(backend, batch), answers(eager, batch)) < TOLERANCE
    finally:
        backend.release()


@pytest.mark.parametrize(
    ("options", "compile_detail"),
    [
        (CUDA_DEFAULTS, "regional (inductor)"),  # compile asked for explicitly
        ({"vision_attention": "grouped", "patch_embed": "linear"}, "off"),  # CUDA's defaults
    ],
    ids=["compiled", "uncompiled"],
)
def test_deterministic_mode_with_the_layer_options_stays_bit_identical_in_every_placement(
    model_cache: Path, options: dict[str, Any], compile_detail: str
) -> None:
    backend, info = load(model_cache, options, deterministic=True)
    try:
        assert info.deterministic and info.details["compile"] == compile_detail
        assert info.details["vision_attention"] == "grouped"
        items = judge_items(score_items(range(6), size), "viescore", "expected")[:3]
        items += judge_items(score_items(range(6, 9), size), "single", "expected")
        partners = judge_items(score_items(range(100, 104), size), "single", "expected")
        found = placements(backend, items, partners)
        assert len({len(item.questions) for item in items}) == 2  # both protocols' shapes
        assert differences(found) == {name: [] for name in found}
    finally:
        backend.release()
        torch.use_deterministic_algorithms(False)  # process-wide: leave later tests as they were


def test_layer_options_default_by_device_and_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "gcc")  # a C compiler for Triton (tests/service_kit/test_compiling.py)
    assert layer_options({}, "cuda:0", False) == LayerOptions(True, "grouped", "inductor", "linear")
    assert layer_options({}, "cpu", False) == LayerOptions(False, "per_image", "inductor", "conv")
    deterministic = layer_options({}, "cuda:1", True)
    assert deterministic == LayerOptions(False, "grouped", "inductor", "linear")
    assert layer_options({"compile": "true"}, "cpu", True).compile
    assert not layer_options({"compile": "false"}, "cuda:0", False).compile
    chosen = layer_options(
        {"vision_attention": "per_image", "compile_backend": "aot_eager"}, "cuda:0", False
    )
    assert chosen == LayerOptions(True, "per_image", "aot_eager", "linear")
    assert not LayerOptions(False, "per_image").replaces_layers
    assert LayerOptions(patch_embed="linear").replaces_layers


def test_compile_is_off_by_default_without_a_c_compiler_for_triton(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", "")
    without = LayerOptions(False, "grouped", "inductor", "linear")
    assert layer_options({}, "cuda:0", False) == without
    assert layer_options({"compile": True}, "cuda:0", False).compile  # asked for: as set


def test_unknown_layer_options_are_refused_with_their_choices() -> None:
    with pytest.raises(ValueError, match="per_image"):
        layer_options({"vision_attention": "packed"}, "cuda:0", False)
    with pytest.raises(ValueError, match="linear"):
        layer_options({"patch_embed": "fft"}, "cuda:0", False)


def test_grouped_attention_runs_consecutive_images_of_one_length_together() -> None:
    assert _runs([16, 16, 16]) == [(3, 16)]
    assert _runs([16, 12, 12, 16]) == [(1, 16), (2, 12), (1, 16)]
    assert _runs([]) == []


# The questions of one prefix folded into one row (prefix_passes, backends.hf.folding).
FOLD_TOLERANCE = 1e-4  # natural-log probability, float32


def every_logprob(answer: QuestionOutput) -> list[float]:
    assert isinstance(answer, ScoreTokenLogprobs)
    return [*answer.first, *answer.after_one, *(v for _, row in answer.after_other for v in row)]


def worst_of_all(a: list[QuestionOutput], b: list[QuestionOutput]) -> float:
    """The largest difference over every digit log-probability, each lead's included."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        xs, ys = every_logprob(x), every_logprob(y)
        assert len(xs) == len(ys)
        worst = max(worst, *(abs(p - q) for p, q in zip(xs, ys, strict=True)))
    return worst


def with_passes(backend: TransformersJudgeBackend, passes: str, batch: list[Any]) -> Any:
    assert backend._passes is not None
    kept = backend._passes.prefix_passes
    backend._passes.prefix_passes = passes  # type: ignore[assignment]
    try:
        return answers(backend, batch)
    finally:
        backend._passes.prefix_passes = kept


def unshared(backend: TransformersJudgeBackend, batch: list[JudgeItem[Any]]) -> Any:
    """Each question alone, as one whole prompt: no prefix shared with anything."""
    return [
        answers(backend, [JudgeItem(item.images, (q,))])[0]
        for item in batch
        for q in item.questions
    ]


def mixed_batch() -> list[JudgeItem[Any]]:
    """viescore (two prefixes of two questions) beside single (one), a question on a 0..25
    scale (two leads: a row per lead), and one with a far longer text than the rest."""
    vie = judge_items(score_items(range(40, 42), size), "viescore", "expected")
    one = judge_items(score_items(range(42, 44), size), "single", "expected")
    first = vie[0].questions
    scaled = replace(first[0], scale=(0, 25))
    text = first[1].content[-1]
    assert isinstance(text, str)
    longer = replace(first[1], content=(*first[1].content[:-1], text + " Be strict." * 40))
    return [JudgeItem(vie[0].images, (scaled, longer, *first[2:])), vie[1], *one]


FOLD_CASES = {
    "viescore": lambda: batches("viescore", "expected", [2])[0],
    "one viescore item": lambda: batches("viescore", "expected", [1])[0],
    "mixed": mixed_batch,
}


@pytest.mark.parametrize("case", FOLD_CASES)
@pytest.mark.parametrize("layers", ["eager", "compiled"])
def test_folded_questions_answer_as_copied_caches_and_as_unshared_prompts(
    eager: TransformersJudgeBackend,
    compiled: tuple[TransformersJudgeBackend, Any, dict[str, int]],
    case: str,
    layers: str,
) -> None:
    backend = eager if layers == "eager" else compiled[0]
    batch = FOLD_CASES[case]()
    prepared = backend.prepare(batch)
    assert prepared.shared_prefixes > 0  # the questions do share prefixes
    folded = with_passes(backend, "folded", batch)
    copied = with_passes(backend, "copied", batch)
    alone = unshared(backend, batch)
    assert all(math.isfinite(v) for a in folded for v in every_logprob(a))
    assert worst_of_all(folded, copied) < FOLD_TOLERANCE
    assert worst_of_all(folded, alone) < FOLD_TOLERANCE
    if case == "mixed":
        assert any(isinstance(a, ScoreTokenLogprobs) and a.after_other for a in folded)


def test_a_question_that_sees_another_questions_segment_answers_differently(
    eager: TransformersJudgeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proof above can fail: the same pass with the segments' mask opened to one long causal
    # row (padding slots included) moves the answers.
    from reward_service.backends.hf import folding, passes

    def leaky(*args: Any, **kwargs: Any) -> folding.Folded:
        made = folding.fold(*args, **kwargs)
        mask = made.attention_mask.clone()
        width = mask.shape[-1] - mask.shape[-2]
        real = mask[..., :width].any(-1, keepdim=True)  # the real slots see their prefix
        span = mask.shape[-2]
        causal = torch.ones(span, span, dtype=torch.bool).tril()
        mask[..., width:] |= causal & real
        return replace(made, attention_mask=mask)

    (batch,) = batches("viescore", "expected", [1])
    right = with_passes(eager, "folded", batch)
    monkeypatch.setattr(passes, "fold", leaky)
    wrong = with_passes(eager, "folded", batch)
    assert worst_of_all(right, with_passes(eager, "copied", batch)) < FOLD_TOLERANCE
    assert worst_of_all(right[1:2], wrong[1:2]) > 1e-3  # the second sees the first's text


def test_folding_places_each_question_at_the_end_of_its_own_segment() -> None:
    from reward_service.backends.hf.folding import fold
    from reward_service.backends.score_tokens import suffix_positions

    suffix_ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10], [0, 11, 12, 13]])
    suffix_mask = (suffix_ids != 0).long()
    prefix_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    deltas = torch.tensor([[3], [-1]])
    made = fold(suffix_ids, suffix_mask, [0, 1, 0], prefix_mask, deltas, pad_id=0)
    # S = 4; row 0: questions 0 and 2; row 1: question 1 and a padding segment
    assert made.input_ids.tolist() == [[0, 0, 5, 6, 0, 11, 12, 13], [7, 8, 9, 10, 0, 0, 0, 0]]
    assert made.logits_to_keep.tolist() == [2, 3, 6, 7]
    assert (made.rows, made.segments) == ([0, 1, 0], [0, 0, 1])
    mask = made.attention_mask[:, 0]
    assert mask.shape == (2, 8, 3 + 8)
    assert mask[0, 6].tolist() == [False, True, True] + [False] * 5 + [True, True, False]
    assert mask[1, 6].tolist() == [False] * 3 + [False] * 6 + [True, False]  # padding: itself
    assert bool(mask.any(-1).all())  # no query sees nothing
    # Each real token's position is the one it has continuing its prefix alone.
    expected = suffix_positions(prefix_mask[[0, 1, 0]], suffix_mask, deltas[[0, 1, 0]])[0]
    positions = made.position_ids[0]
    for q, (row, segment) in enumerate(zip(made.rows, made.segments, strict=True)):
        n = int(suffix_mask[q].sum())
        end = 4 * (segment + 1)
        assert positions[row, end - n : end].tolist() == expected[q, 4 - n :].tolist()
    additive = fold(
        suffix_ids, suffix_mask, [0, 1, 0], prefix_mask, deltas, 0, eager_dtype=torch.float32
    ).attention_mask
    assert bool(((additive == 0) == made.attention_mask).all())


def test_prefix_passes_option_defaults_to_folded_and_copies_for_flash_attention() -> None:
    from reward_service.backends.hf.folding import prefix_passes_option

    assert prefix_passes_option({}, "sdpa") == "folded"
    assert prefix_passes_option({"prefix_passes": "copied"}, "sdpa") == "copied"
    assert prefix_passes_option({}, "flash_attention_2") == "copied"
    with pytest.raises(ValueError, match="folded"):
        prefix_passes_option({"prefix_passes": "stacked"}, "sdpa")
