"""The worker process: one per device, one job at a time, model touched by this thread only.

Spawned by the pool. It pins itself to its GPU through CUDA_VISIBLE_DEVICES before anything
imports torch, loads the backend, reports ready (or why it could not load), then serves jobs from
its own queue until it receives None.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from editor_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EditBackend,
    EditJob,
    InvalidJob,
    JobCancelled,
    make_backend,
)
from editor_service.messages import (
    JobDone,
    JobFailed,
    LoadModel,
    ReleaseModel,
    WorkerEvent,
    WorkerLoadFailed,
    WorkerReady,
    WorkerReleased,
)
from service_kit.logs import configure_logging
from service_kit.oom import free_device_memory, is_out_of_memory
from service_kit.processes import limit_cpu_threads, pin_device

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.sharedctypes import Synchronized

logger = logging.getLogger(__name__)

_OUT_OF_MEMORY = "out of device memory for this edit; try a smaller output size"


def worker_main(
    worker: int,
    device: str,
    cpu_threads: int | None,
    spec: BackendSpec,
    load_on_start: bool,
    cancel_job: Synchronized[int],
    log_level: str,
    jobs: Connection,
    events: Connection,
) -> None:
    """Entry point of a spawned worker.

    ``jobs`` brings EditJob, ReleaseModel, LoadModel or None (stop); ``events`` carries every
    WorkerEvent back. ``cancel_job`` holds the sequence number of a job to stop early. A worker
    whose model cannot load reports why and exits; the pool decides whether to try again.
    """
    configure_logging(log_level)
    local_device = pin_device(device)
    limit_cpu_threads(cpu_threads)
    pid = os.getpid()
    backend = make_backend(spec)
    if load_on_start:
        if not _load(worker, pid, backend, local_device, events):
            return
    else:
        events.send(WorkerReleased(worker, 0.0))

    while True:
        try:
            message = jobs.recv()
        except EOFError:  # the API process is gone
            break
        if message is None:
            break
        if isinstance(message, ReleaseModel):
            started = time.perf_counter()
            backend.release()
            events.send(WorkerReleased(worker, time.perf_counter() - started))
        elif isinstance(message, LoadModel):
            if not _load(worker, pid, backend, local_device, events):
                return
        else:
            events.send(_run_job(worker, backend, message, cancel_job))
    logger.info("worker %d stopping", worker)


def _load(worker: int, pid: int, backend: EditBackend, device: str, events: Connection) -> bool:
    started = time.perf_counter()
    try:
        model = backend.load(device)
    except Exception as exc:
        logger.exception("worker %d could not load its model on %s", worker, device)
        events.send(WorkerLoadFailed(worker, pid, f"{type(exc).__name__}: {exc}"))
        return False
    events.send(WorkerReady(worker, pid, model, time.perf_counter() - started))
    logger.info("worker %d ready on %s", worker, device)
    return True


def _run_job(
    worker: int, backend: EditBackend, job: EditJob, cancel_job: Synchronized[int]
) -> WorkerEvent:
    started = time.perf_counter()
    sequence = _sequence(job.job_id)

    def should_stop() -> bool:
        return bool(cancel_job.value == sequence)

    try:
        output = backend.edit(job, should_stop)
    except InvalidJob as exc:
        return JobFailed(worker, job.job_id, "invalid_input", str(exc), exc.param)
    except JobCancelled:
        logger.info("job %s cancelled on worker %d", job.job_id, worker)
        return JobFailed(worker, job.job_id, "cancelled", "the client went away")
    except DeviceOutOfMemory as exc:
        logger.warning("job %s: %s", job.job_id, exc)
        failed = JobFailed(worker, job.job_id, "out_of_memory", str(exc))
    except Exception as exc:
        if not is_out_of_memory(exc):
            logger.exception("job %s failed on worker %d", job.job_id, worker)
            return JobFailed(
                worker, job.job_id, "backend_error", "the edit failed inside the model"
            )
        logger.warning("job %s: out of device memory on worker %d", job.job_id, worker)
        failed = JobFailed(worker, job.job_id, "out_of_memory", _OUT_OF_MEMORY)
    else:
        edit_s = time.perf_counter() - started
        logger.info("job %s done on worker %d in %.2fs", job.job_id, worker, edit_s)
        return JobDone(worker, job.job_id, output, edit_s)
    # Out of memory. Only here, with the exception and the tensors its traceback held gone, can
    # the allocator give their memory back; the worker then serves the next job.
    free_device_memory()
    return failed


def _sequence(job_id: str) -> int:
    """Job ids are ``<sequence>-<hex>``; the sequence number is what cancellation compares."""
    return int(job_id.split("-", 1)[0])
