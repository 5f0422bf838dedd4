"""Fake judge backends, for tests about batching, HTTP and faults (never about models).

Selected like any custom backend: ``RewardSettings(backend="tests.support.fake_judges:FakeJudge")``
or ``REWARD_BACKEND=tests.support.fake_judges:FakeJudge`` for a real process.

The item's instruction steers the fake (it appears in every rendered question):
``score=N`` answers N (expected mode puts 90% of the mass on N's tokens; generate mode writes
"Score: N", or a JSON list of two where the prompt asks for GEdit's format); ``fake-junk``
makes generate mode answer without a score; ``fake-crash`` raises inside the model; ``fake-oom``
runs out of device memory; ``fake-short`` returns one output too few.
Options (``backend_options``): ``load_delay_s``, ``batch_delay_s``, ``fail_load``, ``refuse_load``
(refused for its configuration: InvalidOption), ``refuse_load_once`` (a file's path: the first
load to create it is refused, every other fails); ``load_gate``
and ``batch_gate``: paths of files the fake waits for (up to 30 s) before loading / scoring, so a
test can hold the model; ``modes``: the score modes it says it offers (default both, as a
local model; ``["generate"]`` as an endpoint without log-probabilities); ``journal``: a file where
each load and batch is recorded as a JSON line (pid, thread, batch size, whether another batch was
running), since the judge runs in its own process.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL.Image import Image

from reward_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    GeneratedText,
    InvalidOption,
    JudgeItem,
    JudgeQuestion,
    LoadedModel,
    QuestionOutput,
    ScoreTokenLogprobs,
    questions_of,
)

_SCORE = re.compile(r"score=(\d+)")


def wait_for_gate(path: object) -> None:
    """Block until the file exists (a test opens the gate by creating it), 30 s at most."""
    if not path:
        return
    gate = Path(str(path))
    deadline = time.monotonic() + 30
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        self._busy = threading.Lock()

    def _record(self, event: str, **fields: Any) -> None:
        journal = self.options.get("journal")
        if journal:
            entry = {"event": event, "pid": os.getpid(), "thread": threading.get_ident()}
            with open(str(journal), "a") as out:
                out.write(json.dumps({**entry, **fields}) + "\n")

    def load(self, device: str) -> LoadedModel:
        self._record("load", device=device)
        wait_for_gate(self.options.get("load_gate"))
        time.sleep(float(self.options.get("load_delay_s", 0)))
        if self.options.get("fail_load"):
            raise RuntimeError("configured to fail while loading")
        if self.options.get("refuse_load"):
            raise InvalidOption("prefix_passes must be 'folded' or 'copied', not 'x' (refuse_load)")
        if once := self.options.get("refuse_load_once"):  # one worker refused, the rest fail
            try:
                os.close(os.open(str(once), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                raise RuntimeError("configured to fail while loading (refuse_load_once)") from None
            raise InvalidOption(
                "prefix_passes must be 'folded' or 'copied', not 'x' (refuse_load_once)"
            )
        return LoadedModel(
            id=f"fake:{self.model}",
            source="local",
            revision="fake",
            model_class=type(self).__name__,
            dtype="none",
            meaningful=False,
            details={"device": device},
            modes=tuple(self.options.get("modes", ("expected", "generate"))),
        )

    def prepare(self, items: Sequence[JudgeItem[Image]]) -> object:
        return questions_of(items)

    def score(self, prepared: object) -> Sequence[QuestionOutput]:
        overlapped = not self._busy.acquire(blocking=False)
        if overlapped:
            self._busy.acquire()
        try:
            assert isinstance(prepared, list)
            texts = [_text(q) for q in prepared]
            self._record("batch", size=len(prepared), overlapped=overlapped, texts=texts)
            return self._score(prepared)
        finally:
            self._busy.release()

    def _score(self, prepared: object) -> Sequence[QuestionOutput]:
        assert isinstance(prepared, list)
        batch: list[JudgeQuestion] = prepared
        wait_for_gate(self.options.get("batch_gate"))
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
        if '"score" : [...]' in text:  # GEdit's prompts ask for a JSON list of two scores
            answer = f'{{"score": [{target}, {target}], "reasoning": "as asked"}}'
            return GeneratedText(text=answer, new_tokens=12)
        return GeneratedText(text=f"The edit is as asked.\nScore: {target}", new_tokens=9)

    def release(self) -> None:
        pass
