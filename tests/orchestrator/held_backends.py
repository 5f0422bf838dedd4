"""The real tiny models behind a hold, so a test can catch a run in the middle of a job.

Selected like any custom backend, in a service process of the test's own:
``EDITOR_BACKEND=tests.orchestrator.held_backends:HeldEditBackend`` or
``REWARD_BACKEND=tests.orchestrator.held_backends:HeldJudgeBackend``, with
``*_BACKEND_OPTIONS='{"gate_dir": DIR, "journal": FILE}'``. The model itself is the built-in
backend (diffusers / transformers) on whatever ``*_MODEL`` names, tiny in the tests.

The item's instruction steers the hold: ``[edit-hold:NAME]`` makes the editor wait before editing,
``[score-hold:NAME]`` makes the judge wait before scoring the batch holding it, until the test
creates ``DIR/NAME`` (opens the gate). Everything else runs at once, so one service serves held
and ordinary items alike. A held edit still honours cancellation (its client went away).

The journal is a JSON line per event, written by the service's worker process:
``{"event": "held" | "started" | "done" | "cancelled", "service": "edit" | "score",
"items": [...], "hold": NAME | null}``, where ``items`` are the ``[item:ID]`` tags found in the
job's instructions. It is how a test counts what the model really ran, item by item.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from editor_service.backends import base as edit_base
from editor_service.backends import factory as edit_factory
from reward_service.backends import base as judge_base
from reward_service.backends import factory as judge_factory

OUR_OPTIONS = ("gate_dir", "journal", "inner", "max_hold_s")
ITEM_TAG = re.compile(r"\[item:([^\]]+)\]")


def hold_tag(kind: str, name: str) -> str:
    """The instruction fragment that holds an item: kind 'edit' or 'score'."""
    return f"[{kind}-hold:{name}]"


def item_tag(item_id: str) -> str:
    return f"[item:{item_id}]"


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def holding(journal: Path, gate_dir: Path) -> set[str]:
    """The holds some job is waiting on now: reported held, gate still closed."""
    held = {e["hold"] for e in read_journal(journal) if e["event"] == "held"}
    return {name for name in held if not (gate_dir / name).exists()}


class _Hold:
    """Gate files and the journal, shared by both wrappers."""

    def __init__(self, service: str, options: dict[str, Any]) -> None:
        self.service = service
        self.gate_dir = Path(str(options["gate_dir"]))
        self.journal = str(options["journal"]) if options.get("journal") else None
        self.max_hold_s = float(options.get("max_hold_s", 300))
        self.pattern = re.compile(re.escape(f"[{service}-hold:") + r"([^\]]+)\]")

    def record(self, event: str, texts: Iterable[str], hold: str | None = None) -> None:
        if self.journal is None:
            return
        items = sorted({m for text in texts for m in ITEM_TAG.findall(text)})
        entry = {"event": event, "service": self.service, "items": items, "hold": hold}
        line = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def wait(self, texts: Sequence[str], should_stop: Callable[[], bool] | None = None) -> bool:
        """Wait for every gate the texts name; False if ``should_stop`` said stop first."""
        for name in sorted({m for text in texts for m in self.pattern.findall(text)}):
            gate = self.gate_dir / name
            if gate.exists():
                continue
            self.record("held", texts, hold=name)
            deadline = time.monotonic() + self.max_hold_s
            while not gate.exists():
                if should_stop is not None and should_stop():
                    return False
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gate {gate} stayed closed for {self.max_hold_s}s")
                time.sleep(0.02)
        return True


def _inner_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in OUR_OPTIONS}


class HeldEditBackend:
    """The built-in editor backend, with holds (see the module docstring)."""

    def __init__(self, spec: edit_base.BackendSpec) -> None:
        self.hold = _Hold("edit", spec.options)
        inner = dataclasses.replace(
            spec,
            backend=str(spec.options.get("inner", "diffusers")),
            options=_inner_options(spec.options),
        )
        self.inner = edit_factory.make_backend(inner)

    def load(self, device: str) -> edit_base.LoadedModel:
        return self.inner.load(device)

    def edit(self, job: edit_base.EditJob, should_stop: Callable[[], bool]) -> edit_base.EditOutput:
        texts = [job.instruction]
        if not self.hold.wait(texts, should_stop):
            self.hold.record("cancelled", texts)
            raise edit_base.JobCancelled(job.job_id)
        self.hold.record("started", texts)
        try:
            output = self.inner.edit(job, should_stop)
        except edit_base.JobCancelled:
            self.hold.record("cancelled", texts)
            raise
        self.hold.record("done", texts)
        return output

    def release(self) -> None:
        self.inner.release()


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    texts: tuple[str, ...]
    inner: object


class HeldJudgeBackend:
    """The built-in judge backend, with holds (see the module docstring)."""

    def __init__(self, spec: judge_base.BackendSpec) -> None:
        self.hold = _Hold("score", spec.options)
        inner = dataclasses.replace(
            spec,
            backend=str(spec.options.get("inner", "transformers")),
            options=_inner_options(spec.options),
        )
        self.inner = judge_factory.make_backend(inner)

    def load(self, device: str) -> judge_base.LoadedModel:
        return self.inner.load(device)

    def prepare(self, items: Sequence[judge_base.JudgeItem[Any]]) -> object:
        texts = tuple(
            " ".join(part for part in q.content if isinstance(part, str))
            for q in judge_base.questions_of(items)
        )
        return _Prepared(texts, self.inner.prepare(items))

    def score(self, prepared: object) -> Sequence[judge_base.QuestionOutput]:
        assert isinstance(prepared, _Prepared)
        self.hold.wait(prepared.texts)
        self.hold.record("started", prepared.texts)
        outputs = self.inner.score(prepared.inner)
        self.hold.record("done", prepared.texts)
        return outputs

    def release(self) -> None:
        self.inner.release()
