"""The editor's dispatch, API-process side: worker assignment over the replica set.

The replicas (one worker process per device), their lifecycle, GPU hand-over and readiness are
service_kit.replicas.replica_set.ReplicaSet's; admission (429, per-client shares), fair order,
deadlines and the drain are the admission queue's (service_kit.replicas.admission), which both
services share. Here: each batch of one job goes to an idle worker; each worker holds at most one
job, so the pool always knows which job a dead worker held: that job alone fails (503) and the
worker is restarted with backoff; a job whose client went away is stopped at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from editor_service.backends.base import BackendSpec, EditJob, EditOutput, LoadedModel
from editor_service.messages import JobDone, JobEvent, JobFailed, RunJob
from editor_service.metrics import EditorMetrics
from editor_service.worker import worker_main
from service_kit.errors import NotReady, ServiceError, WorkerDied, worker_failure
from service_kit.replicas import admission
from service_kit.replicas.dispatch import ReplicaDispatch
from service_kit.replicas.processes import SPAWN
from service_kit.replicas.replica_set import Replica, ReplicaConfig, ReplicaSet
from shared_schemas import WorkerInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    devices: list[str]
    queue_capacity: int
    request_timeout_s: float
    replicas: ReplicaConfig = field(
        default_factory=lambda: ReplicaConfig(name="editor-worker", noun="model")
    )


@dataclass(frozen=True, slots=True)
class EditResult:
    output: EditOutput
    worker: int
    device: str
    model: LoadedModel
    queue_wait_s: float
    edit_s: float
    total_s: float


@dataclass(eq=False)
class _Running:
    """A job on a worker: its outcome, and the ticket that names it to the worker's cancel flag."""

    job: EditJob
    future: asyncio.Future[EditResult]
    ticket: int
    orphaned: bool = False  # its client went away (or the drain ended): it is being stopped


@dataclass(eq=False)
class _Worker(Replica):
    cancel: Any = field(default_factory=lambda: SPAWN.Value("q", -1))
    current: _Running | None = None
    jobs_done: int = 0


class Reservation:
    """A queue slot held while the request is validated, so a refusal costs no image decoding."""

    def __init__(self, slot: admission.Reservation[EditJob, EditResult]) -> None:
        self._slot = slot

    async def run(self, job: EditJob) -> EditResult:
        submitted = time.monotonic()
        [done] = await self._slot.submit([job], label=f"job {job.job_id}")
        return dataclasses.replace(
            done.output, queue_wait_s=done.queued_s, total_s=time.monotonic() - submitted
        )


class WorkerPool(ReplicaDispatch[_Worker, LoadedModel]):
    """Admission, fair order, deadlines and drain are the admission queue's
    (service_kit.replicas.admission), with batches of one job per free worker; here: which
    worker runs a job, and stopping a job whose client went away."""

    def __init__(self, spec: BackendSpec, config: PoolConfig, metrics: EditorMetrics) -> None:
        self.spec = spec
        self.config = config
        self.metrics = metrics
        self.workers = [_Worker(i, d) for i, d in enumerate(config.devices)]
        self.replica_set: ReplicaSet[_Worker] = ReplicaSet(
            self.workers,
            target=worker_main,
            spec=spec,
            config=config.replicas,
            metrics=metrics.replicas,
            idle=lambda: self.in_flight() == 0,
            on_event=self._on_event,
            on_exit=self._on_exit,
            on_change=self._changed,
            extra_args=self._cancel_flag,
        )
        self.queue: admission.AdmissionQueue[EditJob, EditResult] = admission.AdmissionQueue(
            self._run,
            policy=admission.BatchPolicy(max_batch_cost=1, max_wait_s=0.0),
            capacity=config.queue_capacity,
            timeout_s=config.request_timeout_s,
            metrics=metrics.admission,
            batches_out=self._workers_free_for_jobs,
            ahead=0,  # a job leaves the fair queue only for a free worker
            spare_room=self._idle_workers,
            check_ready=self.replica_set.check_admission,
        )
        self._tickets = itertools.count(1)

    @staticmethod
    def _cancel_flag(worker: _Worker) -> tuple[Any, ...]:
        worker.cancel.value = -1
        return (worker.cancel,)

    # ----------------------------------------------------------------- lifecycle

    def in_flight(self) -> int:
        """Jobs admitted and not answered yet (being validated, queued or running), and jobs
        still stopping on a worker after their client went away."""
        return self.queue.in_flight() + sum(
            1 for w in self.workers if w.current is not None and w.current.orphaned
        )

    def stopped(self) -> None:
        for worker in self.workers:
            if worker.current is not None:
                self._fail(worker.current, NotReady("the service is shutting down"))
                worker.current = None

    # ----------------------------------------------------------------- admission

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[Reservation]:
        """Hold a queue slot; raises NotReady or QueueFull before any work is done."""
        async with self.queue.reserve(1) as slot:
            yield Reservation(slot)

    def retry_after_s(self) -> float:
        return self.queue.retry_after_s()

    @staticmethod
    def new_job_id() -> str:
        return f"job-{uuid.uuid4().hex[:16]}"

    # ----------------------------------------------------------------- worker assignment

    def _workers_free_for_jobs(self) -> int:
        """Jobs the queue may have out at once: one per serving worker not still stopping a job
        whose client went away."""
        return sum(
            1 for w in self.replica_set.serving() if w.current is None or not w.current.orphaned
        )

    def _idle_workers(self) -> int:
        return sum(1 for w in self.replica_set.serving() if w.current is None)

    def _changed(self) -> None:
        self.queue.wake()  # a worker became ready, or free

    async def _run(self, batch: dict[int, EditJob]) -> dict[int, EditResult]:
        """Run a batch of one job on an idle worker; stop it if the queue gives it up."""
        [(uid, job)] = batch.items()
        worker = next((w for w in self.replica_set.serving() if w.current is None), None)
        if worker is None:  # it stopped serving between the queue's count and now
            raise WorkerDied("no worker is free for this job", retry_after_s=5)
        running = _Running(job, asyncio.get_running_loop().create_future(), next(self._tickets))
        worker.current = running
        if not self.replica_set.send(worker, RunJob(job, running.ticket)):
            worker.current = None
            raise WorkerDied(f"worker {worker.index} could not take this job", retry_after_s=5)
        try:
            return {uid: await asyncio.shield(running.future)}
        except asyncio.CancelledError:
            if worker.current is running:
                # Nobody will read its outcome: stop it at its next step.
                running.orphaned = True
                worker.cancel.value = running.ticket
                logger.info("job %s: asking worker %d to stop", job.job_id, worker.index)
            raise

    # ----------------------------------------------------------------- events

    def _on_event(self, worker: _Worker, event: JobEvent) -> None:
        if isinstance(event, JobDone):
            self._finish(worker, event)
        elif isinstance(event, JobFailed):
            self._finish_failed(worker, event)

    def _on_exit(self, worker: _Worker) -> None:
        """A worker exited unasked: only the job it held fails, with a retryable 503."""
        if worker.current is not None:
            self._fail(
                worker.current,
                WorkerDied(f"worker {worker.index} died while running this job", retry_after_s=5),
            )
            self.metrics.jobs.labels("worker_died").inc()
            worker.current = None

    def _finish(self, worker: _Worker, event: JobDone) -> None:
        pending = self._take_current(worker, event.job_id)
        worker.jobs_done += 1
        self.metrics.jobs.labels("ok").inc()
        self.metrics.edit_seconds.observe(event.edit_s)
        if event.output.device_memory_peak_bytes is not None:
            peak = event.output.device_memory_peak_bytes
            self.metrics.device_memory_peak.labels(str(worker.index)).set(peak)
        if pending is None or pending.future.done() or worker.model is None:
            return
        pending.future.set_result(
            EditResult(
                output=event.output,
                worker=worker.index,
                device=worker.device,
                model=worker.model,
                queue_wait_s=0.0,  # the queue's to say (Reservation.run)
                edit_s=event.edit_s,
                total_s=event.edit_s,
            )
        )

    def _finish_failed(self, worker: _Worker, event: JobFailed) -> None:
        pending = self._take_current(worker, event.job_id)
        self.metrics.jobs.labels(event.kind).inc()
        if pending is not None:
            self._fail(pending, worker_failure(event.kind, event.message, event.param))

    def _take_current(self, worker: _Worker, job_id: str) -> _Running | None:
        pending = worker.current
        worker.current = None
        worker.cancel.value = -1
        if pending is None or pending.job.job_id != job_id:
            logger.error("worker %d reported job %s it was not given", worker.index, job_id)
            return None
        return pending

    @staticmethod
    def _fail(pending: _Running, error: ServiceError) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)

    # ----------------------------------------------------------------- views

    @property
    def queue_depth(self) -> int:
        return self.queue.depth

    def worker_infos(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                index=w.index,
                device=w.device,
                state="busy" if w.current is not None and w.state == "ready" else w.state,
                pid=w.pid,
                jobs_done=w.jobs_done,
                restarts=w.restarts,
            )
            for w in self.workers
        ]
