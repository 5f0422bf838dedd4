"""A judge worker process: one model replica, on one device, in a process of its own.

The model runs here, away from the API process's HTTP, JSON and image decoding, which would
otherwise contend with it for the interpreter: an eager forward pass of an MoE judge launches
thousands of kernels from Python. The replica runtime (service_kit.replicas.worker_runtime) pins the
device, loads, releases and reports; here a receiving thread prepares the next batch (template,
image processing, tokens) while the main thread runs the model on the current one.

A batch never fails an innocent item: when preparing or running a batch fails (a bad item, a
shape error, out of memory), its halves are tried, and theirs, down to single items (at most
2n - 1 runs for n items), whichever backend is plugged in. Only an item that fails on its own is
answered with `QuestionFailed` (for each of its questions), saying what went wrong and whether a
retry can help. A remote endpoint that is unavailable fails the whole batch (no item is at fault).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL.Image import Image

from reward_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EndpointError,
    JudgeBackend,
    JudgeItem,
    QuestionError,
    QuestionOutput,
)
from reward_service.backends.factory import make_backend
from reward_service.messages import (
    Answer,
    BatchDone,
    BatchFailed,
    CancelBatch,
    JudgeEvent,
    QuestionFailed,
    ScoreBatch,
)
from service_kit.replicas.worker_runtime import Failure, ReplicaRuntime

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

_STOP = object()
_OUT_OF_MEMORY = "out of device memory for this batch; try fewer or smaller images per request"
Items = list[JudgeItem[Image]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    batch_id: int
    keys: tuple[int, ...]  # one per item: what its answers are returned under
    items: Items
    work: object  # what the backend's prepare returned; None if preparing failed
    received_at: float  # perf_counter() when the batch came off the pipe
    ready_at: float  # ... and when its preparation ended


@dataclass(frozen=True, slots=True)
class _Refused(Failure):
    """A remote endpoint refused the request (its message is safe to pass on)."""


class _Unavailable(Exception):
    """A remote endpoint is unavailable: the whole batch is to be tried again later."""

    def __init__(self, error: EndpointError) -> None:
        super().__init__(error.message)
        self.error = error


def judge_worker_main(
    replica: int,
    device: str,
    cpu_threads: int | None,
    spec: BackendSpec,
    load_on_start: bool,
    log_level: str,
    jobs: Connection,
    events: Connection,
) -> None:
    """Entry point of a spawned judge worker (see the module docstring)."""
    runtime: ReplicaRuntime[JudgeBackend] = ReplicaRuntime(
        f"judge replica {replica}",
        device,
        cpu_threads,
        log_level,
        events,
        lambda: make_backend(spec),
    )
    if not runtime.start(load_on_start):
        return
    # What is sent here is bounded by the admission queue (it owns back-pressure).
    work: queue.Queue[object] = queue.Queue()
    cancelled: set[int] = set()
    receiver = threading.Thread(
        target=_receive,
        args=(runtime.backend, jobs, work, cancelled),
        name="judge-prepare",
        daemon=True,
    )
    receiver.start()
    free_since = time.perf_counter()  # when the model thread last ran out of work
    while True:
        item = work.get()
        if item is _STOP:
            break
        if isinstance(item, _Prepared):
            if item.batch_id in cancelled:
                cancelled.discard(item.batch_id)
                runtime.send(BatchFailed(item.batch_id, "cancelled", "its clients went away"))
            else:
                runtime.send(_score(runtime.backend, item, free_since))
                free_since = time.perf_counter()
            continue
        if runtime.handle_lifecycle(item) is False:
            return
        free_since = time.perf_counter()
    logger.info("judge replica %d stopping", replica)


def _receive(
    backend: JudgeBackend,
    jobs: Connection,
    work: queue.Queue[object],
    cancelled: set[int],
) -> None:
    """Thread: take messages off the pipe in order; prepare batches as they come."""
    while True:
        try:
            message = jobs.recv()
        except (EOFError, OSError):  # the API process is gone
            message = None
        if message is None:
            work.put(_STOP)
            return
        if isinstance(message, CancelBatch):
            cancelled.add(message.batch_id)
            continue
        if not isinstance(message, ScoreBatch):
            work.put(message)
            continue
        started = time.perf_counter()
        items = message.decoded()
        try:
            prepared = backend.prepare(items)
        except Exception:
            # The model thread finds the culprit (see the module docstring).
            logger.warning("preparing batch %d failed", message.batch_id, exc_info=True)
            prepared = None
        work.put(
            _Prepared(message.batch_id, message.keys, items, prepared, started, time.perf_counter())
        )


def _score(backend: JudgeBackend, item: _Prepared, free_since: float) -> JudgeEvent:
    """Run one prepared batch; ``free_since``: when the model finished its previous work."""
    started = time.perf_counter()
    what = f"batch {item.batch_id}"
    try:
        answers = _run(backend, item.items, item.work, what)
        if isinstance(answers, Failure):
            logger.warning("%s (%d items) failed; trying its parts", what, len(item.items))
            answers = _split(backend, item.items, answers, what)
    except _Unavailable as exc:
        logger.warning("%s: %s", what, exc.error.message)
        return BatchFailed(item.batch_id, "endpoint_unavailable", exc.error.message)
    # The backend answers the batch's questions in order (its seam is a model call); here they
    # become each item's answers, under its key.
    flat = iter(answers)
    return BatchDone(
        item.batch_id,
        {
            key: tuple(itertools.islice(flat, len(one.questions)))
            for key, one in zip(item.keys, item.items, strict=True)
        },
        prepare_s=item.ready_at - item.received_at,
        score_s=time.perf_counter() - started,
        idle_s=max(0.0, item.received_at - free_since),
        stall_s=max(0.0, item.ready_at - max(free_since, item.received_at)),
    )


def _run(backend: JudgeBackend, items: Items, work: object, what: str) -> list[Answer] | Failure:
    """One call of the model; any failure (a wrong number of answers too) is a Failure.
    Raises _Unavailable when a remote endpoint is unavailable."""
    if work is None:
        return Failure("backend_error", "the judge could not prepare it")
    expected = sum(len(item.questions) for item in items)

    def score() -> list[Answer] | Failure:
        try:
            outputs: list[Answer] = [_answer(o) for o in backend.score(work)]
        except EndpointError as exc:  # a remote judge: its message is safe to pass on
            if exc.retryable:
                raise _Unavailable(exc) from None
            return _Refused("backend_error", f"the judge endpoint refused it: {exc.message}")
        if len(outputs) != expected:
            logger.error("%s: %d answers for %d questions", what, len(outputs), expected)
            return Failure("backend_error", "the judge gave a wrong number of answers")
        return outputs

    return ReplicaRuntime.guarded(
        score,
        what=what,
        oom_types=(DeviceOutOfMemory,),
        oom_message=_OUT_OF_MEMORY,
        error_message="the judge failed on it",
        passthrough=(_Unavailable,),
    )


def _answer(output: QuestionOutput | QuestionError) -> Answer:
    """A question a remote endpoint failed on its own fails only its item."""
    if not isinstance(output, QuestionError):
        return output
    if output.retryable:
        return QuestionFailed("endpoint_unavailable", output.message, retryable=True)
    return QuestionFailed("endpoint_refused", output.message, retryable=False)


def _split(backend: JudgeBackend, items: Items, failure: Failure, what: str) -> list[Answer]:
    """Answers for ``items`` whose run together failed with ``failure``: each half is prepared
    and run again, recursively; an item that fails on its own gets its failure."""
    if len(items) == 1:
        return [_failed_alone(failure)] * len(items[0].questions)
    middle = len(items) // 2
    answers: list[Answer] = []
    for part in (items[:middle], items[middle:]):
        try:
            work = backend.prepare(part)
        except Exception:
            logger.warning("%s: preparing %d items failed", what, len(part), exc_info=True)
            work = None
        outputs = _run(backend, part, work, what)
        if isinstance(outputs, Failure):
            outputs = _split(backend, part, outputs, what)
        answers.extend(outputs)
    return answers


def _failed_alone(failure: Failure) -> QuestionFailed:
    if failure.kind == "out_of_memory":
        return QuestionFailed(
            "out_of_memory",
            "out of device memory for this item even on its own; retry later, or send it with "
            "smaller images",
            retryable=True,
        )
    return QuestionFailed(
        "endpoint_refused" if isinstance(failure, _Refused) else "backend_error",
        f"{failure.message} (this item on its own; the other items of its batch were scored); "
        "retrying it will not help",
        retryable=False,
    )
