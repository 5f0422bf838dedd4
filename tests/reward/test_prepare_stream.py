"""Preparing on a CUDA stream of its own (option ``prepare_stream``): the option, the hand-over
of a prepared batch's tensors to the model thread, and equal answers on a GPU.

The CPU tests run the tiny judge; the gpu test (``pytest -m gpu tests/reward``) prepares the same
batches on a side stream and on the default stream while another thread keeps the default stream
busy, as the model thread does, and finds the same tensors and the same answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL.Image import Image

from reward_service.backends.base import (
    BackendSpec,
    JudgeItem,
    JudgeQuestion,
    ScoreTokenLogprobs,
)
from reward_service.backends.hf.planning import ExpectedGroup, PreparedBatch
from reward_service.backends.hf.prepare_stream import PrepareStreams, stream_choice, tensors_of
from reward_service.backends.transformers_backend import TransformersJudgeBackend
from tests.support.images import make_image

pytestmark = pytest.mark.tiny


def viescore_like(seed: int) -> JudgeItem[Image]:
    """Two questions on (source, edited) and one on the edited image alone: shared prefixes,
    an image encoded once for two prefixes, two length buckets."""
    images = (make_image(64, 64, seed), make_image(48, 64, seed + 50))
    answer = "Answer with one integer from 0 to 10 and nothing else."
    questions = tuple(
        JudgeQuestion(
            f"t/{seed}/{name}", "You are a judge.", (*shown, f"{name}? {answer}"), "expected"
        )
        for name, shown in (("sc1", (0, 1)), ("sc2", (0, 1)), ("pq", (1,)))
    )
    return JudgeItem(images, questions)


def backend(cache: Path, device: str, **options: Any) -> TransformersJudgeBackend:
    spec = BackendSpec("transformers", "tiny", None, "auto", str(cache), options)
    judge = TransformersJudgeBackend(spec)
    judge.load(device)
    return judge


@pytest.fixture(scope="module")
def judge(model_cache: Path) -> Iterator[TransformersJudgeBackend]:
    loaded = backend(model_cache, "cpu")
    yield loaded
    loaded.release()


def test_prepare_stream_is_side_unless_set_and_unknown_values_are_refused() -> None:
    assert stream_choice({}) == "side"
    assert stream_choice({"prepare_stream": "default"}) == "default"
    assert stream_choice({"prepare_stream": " Side "}) == "side"
    with pytest.raises(ValueError, match="prepare_stream must be one of side, default"):
        stream_choice({"prepare_stream": "sideways"})


def test_a_judge_with_an_unknown_prepare_stream_does_not_load(model_cache: Path) -> None:
    with pytest.raises(ValueError, match="prepare_stream"):
        backend(model_cache, "cpu", prepare_stream="parallel")


def test_streams_are_used_on_cuda_devices_only_and_only_when_side() -> None:
    assert PrepareStreams("cuda:0", "side").enabled
    assert not PrepareStreams("cuda:0", "default").enabled
    assert not PrepareStreams("cpu", "side").enabled


def test_the_hand_over_reaches_every_tensor_of_a_prepared_batch(
    judge: TransformersJudgeBackend,
) -> None:
    prepared = judge.prepare([viescore_like(1), viescore_like(2)])
    assert isinstance(prepared, PreparedBatch)
    (group,) = prepared.groups
    assert isinstance(group, ExpectedGroup) and group.prefix_of is not None
    expected = [*group.prefixes.data.values(), group.suffix_ids, group.suffix_mask]
    expected.append(group.image_grid)
    found = list(tensors_of(prepared))
    assert all(isinstance(t, torch.Tensor) for t in found)
    assert {id(t) for t in expected} <= {id(t) for t in found}
    assert len(found) == len({id(t) for t in found})  # each once


def test_a_cpu_judge_answers_the_same_whichever_stream_is_asked_for(
    judge: TransformersJudgeBackend, model_cache: Path
) -> None:
    other = backend(model_cache, "cpu", prepare_stream="default")
    batch = [viescore_like(seed) for seed in range(3)]
    assert judge.score(judge.prepare(batch)) == other.score(other.prepare(batch))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_side_stream_prepares_the_same_batch_while_the_default_stream_is_busy(
    model_cache: Path,
) -> None:
    side = backend(model_cache, "cuda:0", prepare_stream="side", compile=False)
    default = backend(model_cache, "cuda:0", prepare_stream="default", compile=False)
    batches = [[viescore_like(seed + 3 * n) for seed in range(3)] for n in range(4)]
    stop = threading.Event()

    def keep_busy() -> None:
        a = torch.randn(4096, 4096, device="cuda:0")
        while not stop.is_set():
            for _ in range(50):
                a = (a @ a) * 1e-3
            torch.cuda.synchronize()

    busy = threading.Thread(target=keep_busy, daemon=True)
    busy.start()
    try:
        on_side = [side.prepare(batch) for batch in batches]
        on_default = [default.prepare(batch) for batch in batches]
    finally:
        stop.set()
        busy.join(timeout=60)
    for one, two in zip(on_side, on_default, strict=True):
        tensors = list(zip(tensors_of(one), tensors_of(two), strict=True))
        assert tensors and all(torch.equal(a, b) for a, b in tensors)
    # The model (on the default stream) reads what the side stream made: the same answers as
    # from the default stream's tensors, within run-to-run noise of the GPU's kernels.
    for one, two in zip(on_side, on_default, strict=True):
        for a, b in zip(side.score(one), side.score(two), strict=True):
            assert isinstance(a, ScoreTokenLogprobs) and isinstance(b, ScoreTokenLogprobs)
            assert a.first == pytest.approx(b.first, abs=1e-4)
            assert a.after_one == pytest.approx(b.after_one, abs=1e-4)
    side.release()
    default.release()
