"""Fake judge backends, for tests about batching, HTTP and faults (never about models).

Selected like any custom backend: ``RewardSettings(backend="tests.support.fake_judges:FakeJudge")``
or ``REWARD_BACKEND=tests.support.fake_judges:FakeJudge`` for a real process.

The item's instruction steers the fake (it appears in every rendered question):
``score=N`` answers N (expected mode puts 90% of the mass on N's tokens; generate mode writes
"Score: N"); ``fake-junk`` makes generate mode answer without a score; ``fake-crash`` raises
inside the model; ``fake-oom`` runs out of device memory; ``fake-short`` returns one output too
few.
Options (``backend_options``): ``load_delay_s``, ``batch_delay_s``, ``fail_load``, ``load_gate``
and ``batch_gate`` (names of threading.Events in GATES, for in-process tests to hold the model).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Sequence

from reward_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    GeneratedText,
    JudgeQuestion,
    LoadedModel,
    QuestionOutput,
    ScoreTokenLogprobs,
)

GATES: dict[str, threading.Event] = {}
_SCORE = re.compile(r"score=(\d+)")


def peaked_logprobs(target: int, peak: float = 0.9) -> ScoreTokenLogprobs:
    """Log-probabilities whose expected-mode reading puts ``peak`` of the mass on ``target``."""
    rest = math.log((1 - peak) / 10)
    first = [rest] * 10
    after_one = [rest] * 10
    if target == 10:
        first[1] = math.log(peak)
        after_one[0] = math.log(peak)
    else:
        first[target] = math.log(peak)
        if target == 1:
            after_one = [math.log(0.01 / 10)] * 10  # "1" then the end: mostly a plain 1
    return ScoreTokenLogprobs(first=tuple(first), after_one=tuple(after_one))


def _text(question: JudgeQuestion) -> str:
    return " ".join(part for part in question.content if isinstance(part, str))


class FakeJudge:
    """Answers from the instruction; records which threads and batch sizes it saw."""

    def __init__(self, spec: BackendSpec) -> None:
        self.options = spec.options
        self.model = spec.model
        self.threads: set[str] = set()
        self.batch_sizes: list[int] = []
        self.overlapping_calls = 0
        self._busy = threading.Lock()

    def load(self, device: str) -> LoadedModel:
        self.threads.add(threading.current_thread().name)
        gate = self.options.get("load_gate")
        if gate:
            GATES[str(gate)].wait(30)
        time.sleep(float(self.options.get("load_delay_s", 0)))
        if self.options.get("fail_load"):
            raise RuntimeError("configured to fail while loading")
        return LoadedModel(
            id=f"fake:{self.model}",
            source="local",
            revision="fake",
            model_class=type(self).__name__,
            dtype="none",
            meaningful=False,
            details={"device": device},
        )

    def prepare(self, batch: Sequence[JudgeQuestion]) -> object:
        return list(batch)

    def score(self, prepared: object) -> Sequence[QuestionOutput]:
        if not self._busy.acquire(blocking=False):
            self.overlapping_calls += 1
            self._busy.acquire()
        try:
            return self._score(prepared)
        finally:
            self._busy.release()

    def _score(self, prepared: object) -> Sequence[QuestionOutput]:
        assert isinstance(prepared, list)
        batch: list[JudgeQuestion] = prepared
        self.threads.add(threading.current_thread().name)
        self.batch_sizes.append(len(batch))
        gate = self.options.get("batch_gate")
        if gate:
            GATES[str(gate)].wait(30)
        time.sleep(float(self.options.get("batch_delay_s", 0)))
        texts = [_text(q) for q in batch]
        if any("fake-crash" in t for t in texts):
            raise RuntimeError("fake crash inside the model")
        if any("fake-oom" in t for t in texts):
            raise DeviceOutOfMemory("fake out of memory")
        outputs: list[QuestionOutput] = [
            self._answer(q, t) for q, t in zip(batch, texts, strict=True)
        ]
        if any("fake-short" in t for t in texts):
            outputs.pop()
        return outputs

    @staticmethod
    def _answer(question: JudgeQuestion, text: str) -> QuestionOutput:
        found = _SCORE.search(text)
        target = int(found.group(1)) if found else 5
        if question.mode == "expected":
            return peaked_logprobs(target)
        if "fake-junk" in text:
            return GeneratedText(text="gogh</tool_response> painting ir ir", new_tokens=9)
        return GeneratedText(text=f"The edit is as asked.\nScore: {target}", new_tokens=9)

    def release(self) -> None:
        pass
