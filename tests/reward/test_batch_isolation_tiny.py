"""A judge batch never fails an innocent item, on the tiny real Qwen3-VL judge (CPU).

The culprit is an item the real processor refuses (an image far too thin to cut into patches):
the batch it is in fails to prepare, the worker tries the parts, and every other item is scored
as it would be alone, by the real model; only the culprit is answered with a failure that says a
retry will not help.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL.Image import Image

from reward_service.backends.base import BackendSpec, JudgeItem, JudgeQuestion, ScoreTokenLogprobs
from reward_service.backends.transformers_backend import TransformersJudgeBackend
from reward_service.messages import QuestionFailed
from reward_service.worker import _Prepared, _score
from tests.support.images import make_image

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def judge(model_cache: Path) -> Iterator[TransformersJudgeBackend]:
    backend = TransformersJudgeBackend(
        BackendSpec("transformers", "tiny", None, "auto", str(model_cache))
    )
    backend.load("cpu")
    yield backend
    backend.release()


def question(seed: int, width: int = 64, height: int = 64) -> JudgeItem[Image]:
    """An item of one question about one image."""
    asked = JudgeQuestion(
        key=f"isolation/{seed}",
        system="You are a professional digital artist.",
        content=("Edited image:", 0, "Answer with one integer from 0 to 10 and nothing else."),
        mode="expected",
        max_new_tokens=0,
    )
    return JudgeItem((make_image(width, height, seed),), (asked,))


def prepared(judge: TransformersJudgeBackend, items: list[JudgeItem[Image]]) -> _Prepared:
    """What the worker's receiving thread hands the model thread (None: preparing failed)."""
    now = time.perf_counter()
    try:
        work: object = judge.prepare(items)
    except Exception:
        work = None
    return _Prepared(1, tuple(range(len(items))), items, work, now, now)


def test_a_bad_item_fails_alone_and_its_batch_mates_are_scored_as_alone(
    judge: TransformersJudgeBackend,
) -> None:
    culprit = question(9, width=4000, height=2)  # far beyond the processor's aspect ratio limit
    with pytest.raises(Exception):  # noqa: B017 - whichever error the real processor raises
        judge.prepare([culprit])
    innocents = [question(seed) for seed in range(4)]
    batch = [innocents[0], innocents[1], culprit, innocents[2], innocents[3]]

    done = _score(judge, prepared(judge, batch), time.perf_counter())
    outputs = [answer for key in range(len(batch)) for answer in done.answers[key]]

    assert len(outputs) == len(batch)
    failed = outputs[2]
    assert isinstance(failed, QuestionFailed)
    assert failed.kind == "backend_error" and failed.retryable is False
    assert "will not help" in failed.message
    for innocent, output in zip(innocents, [*outputs[:2], *outputs[3:]], strict=True):
        assert isinstance(output, ScoreTokenLogprobs)
        alone = judge.score(judge.prepare([innocent]))[0]
        assert isinstance(alone, ScoreTokenLogprobs)
        assert output.first == pytest.approx(alone.first, abs=1e-4)


def test_a_batch_that_runs_whole_is_not_split(judge: TransformersJudgeBackend) -> None:
    batch = [question(seed) for seed in range(3)]
    done = _score(judge, prepared(judge, batch), time.perf_counter())
    outputs = [answer for key in range(len(batch)) for answer in done.answers[key]]
    assert all(isinstance(o, ScoreTokenLogprobs) for o in outputs)
    assert len(outputs) == 3
