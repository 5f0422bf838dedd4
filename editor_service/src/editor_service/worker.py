"""The editor's worker process: one per device, one job at a time, model touched by this thread.

Spawned by the pool. The replica runtime (service_kit.replicas.worker_runtime) pins the device,
loads the backend and reports; this module only runs jobs from its pipe until it receives None,
stopping a job early when the pool sets the cancel flag to that job's ticket.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from editor_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EditBackend,
    InvalidJob,
    JobCancelled,
)
from editor_service.backends.factory import make_backend
from editor_service.messages import JobDone, JobEvent, JobFailed, RunJob
from service_kit.replicas.worker_runtime import Failure, ReplicaRuntime

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
    log_level: str,
    cancel: Synchronized[int],
    jobs: Connection,
    events: Connection,
) -> None:
    """Entry point of a spawned worker.

    ``jobs`` brings RunJob, ReleaseModel, LoadModel or None (stop); ``events`` carries every
    event back. ``cancel`` holds the ticket of a job to stop early. A worker whose model cannot
    load reports why and exits; the pool decides whether to try again.
    """
    runtime = ReplicaRuntime(
        f"worker {worker}", device, cpu_threads, log_level, events, lambda: make_backend(spec)
    )
    if not runtime.start(load_on_start):
        return
    while True:
        try:
            message = jobs.recv()
        except EOFError:  # the API process is gone
            break
        if message is None:
            break
        handled = runtime.handle_lifecycle(message)
        if handled is False:
            return
        if handled is None:
            runtime.send(_run_job(worker, runtime.backend, message, cancel))
    logger.info("worker %d stopping", worker)


def _run_job(worker: int, backend: EditBackend, run: RunJob, cancel: Synchronized[int]) -> JobEvent:
    job = run.job
    started = time.perf_counter()

    def should_stop() -> bool:
        return bool(cancel.value == run.ticket)

    def edit() -> JobEvent:
        try:
            output = backend.edit(job, should_stop)
        except InvalidJob as exc:
            return JobFailed(job.job_id, "invalid_input", str(exc), exc.param)
        except JobCancelled:
            logger.info("job %s cancelled on worker %d", job.job_id, worker)
            return JobFailed(job.job_id, "cancelled", "the client went away")
        edit_s = time.perf_counter() - started
        logger.info("job %s done on worker %d in %.2fs", job.job_id, worker, edit_s)
        return JobDone(job.job_id, output, edit_s)

    outcome = ReplicaRuntime.guarded(
        edit,
        what=f"job {job.job_id} on worker {worker}",
        oom_types=(DeviceOutOfMemory,),
        oom_message=_OUT_OF_MEMORY,
        error_message="the edit failed inside the model",
    )
    if isinstance(outcome, Failure):
        return JobFailed(job.job_id, outcome.kind, outcome.message)
    return outcome
