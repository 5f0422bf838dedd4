"""A judge worker process: one model replica, on one device, in a process of its own.

The model runs here, away from the API process's HTTP, JSON and image decoding, which would
otherwise contend with it for the interpreter: an eager forward pass of an MoE judge launches
thousands of kernels from Python. Inside, a receiving thread prepares the next batch (template,
image processing, tokens) while the main thread runs the model on the current one.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reward_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EndpointError,
    JudgeBackend,
    make_backend,
)
from reward_service.messages import (
    BatchDone,
    BatchFailed,
    CancelBatch,
    FailureKind,
    JudgeEvent,
    LoadModel,
    ReleaseModel,
    ReplicaLoadFailed,
    ReplicaReady,
    ReplicaReleased,
    ScoreBatch,
)
from service_kit.logs import configure_logging
from service_kit.oom import free_device_memory, is_out_of_memory
from service_kit.processes import limit_cpu_threads, pin_device

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

_STOP = object()
_OUT_OF_MEMORY = "out of device memory for this batch; try fewer or smaller images per request"


class _LockedPipe:
    """A pipe end that two threads may send on (whole messages, never interleaved)."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._lock:
            self._pipe.send(message)


@dataclass(frozen=True, slots=True)
class _Prepared:
    batch_id: int
    work: object  # what the backend's prepare returned
    received_at: float  # perf_counter() when the batch came off the pipe
    ready_at: float  # ... and when its preparation ended


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
    configure_logging(log_level)
    local_device = pin_device(device)
    limit_cpu_threads(cpu_threads)
    out = _LockedPipe(events)  # both threads send on it
    backend = make_backend(spec)
    if load_on_start:
        if not _load(backend, local_device, out):
            return
    else:
        out.send(ReplicaReleased(0.0))
    # One prepared batch waits while another runs; the API sends no more than that.
    work: queue.Queue[object] = queue.Queue(maxsize=1)
    cancelled: set[int] = set()
    receiver = threading.Thread(
        target=_receive,
        args=(backend, jobs, work, out, cancelled),
        name="judge-prepare",
        daemon=True,
    )
    receiver.start()
    free_since = time.perf_counter()  # when the model thread last ran out of work
    while True:
        item = work.get()
        if item is _STOP:
            break
        if isinstance(item, ReleaseModel):
            started = time.perf_counter()
            backend.release()
            out.send(ReplicaReleased(time.perf_counter() - started))
        elif isinstance(item, LoadModel):
            if not _load(backend, local_device, out):
                return
            free_since = time.perf_counter()
        elif isinstance(item, _Prepared):
            if item.batch_id in cancelled:
                cancelled.discard(item.batch_id)
                out.send(BatchFailed(item.batch_id, "cancelled", "its clients went away"))
            else:
                out.send(_score(backend, item, free_since))
                free_since = time.perf_counter()
    logger.info("judge replica %d stopping", replica)


def _load(backend: JudgeBackend, device: str, events: _LockedPipe) -> bool:
    started = time.perf_counter()
    try:
        model = backend.load(device)
    except Exception as exc:
        logger.exception("the judge model could not be loaded on %s", device)
        events.send(ReplicaLoadFailed(os.getpid(), f"{type(exc).__name__}: {exc}"))
        return False
    events.send(ReplicaReady(os.getpid(), model, time.perf_counter() - started))
    return True


def _receive(
    backend: JudgeBackend,
    jobs: Connection,
    work: queue.Queue[object],
    events: _LockedPipe,
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
        try:
            prepared = backend.prepare(message.decoded())
        except Exception:
            logger.exception("preparing batch %d failed", message.batch_id)
            events.send(
                BatchFailed(message.batch_id, "backend_error", "preparing the batch failed")
            )
            continue
        work.put(_Prepared(message.batch_id, prepared, started, time.perf_counter()))


def _score(backend: JudgeBackend, item: _Prepared, free_since: float) -> JudgeEvent:
    """Run one prepared batch; ``free_since``: when the model finished its previous work."""
    started = time.perf_counter()
    failed: BatchFailed | None = None
    try:
        outputs = tuple(backend.score(item.work))
    except DeviceOutOfMemory as exc:
        logger.warning("batch %d: %s", item.batch_id, exc)
        failed = BatchFailed(item.batch_id, "out_of_memory", str(exc))
    except EndpointError as exc:  # a remote judge: its message is safe to pass on
        logger.warning("batch %d: %s", item.batch_id, exc.message)
        kind: FailureKind = "endpoint_unavailable" if exc.retryable else "endpoint_refused"
        return BatchFailed(item.batch_id, kind, exc.message)
    except Exception as exc:
        if not is_out_of_memory(exc):
            logger.exception("batch %d failed inside the model", item.batch_id)
            return BatchFailed(item.batch_id, "backend_error", "the judge failed on this batch")
        logger.warning("batch %d: out of device memory", item.batch_id)
        failed = BatchFailed(item.batch_id, "out_of_memory", _OUT_OF_MEMORY)
    if failed is not None:
        # Only now, with the exception and the tensors its traceback held gone, can the
        # allocator give their memory back; the replica then serves the next batch.
        free_device_memory()
        return failed
    return BatchDone(
        item.batch_id,
        outputs,
        prepare_s=item.ready_at - item.received_at,
        score_s=time.perf_counter() - started,
        idle_s=max(0.0, item.received_at - free_since),
        stall_s=max(0.0, item.ready_at - max(free_since, item.received_at)),
    )
