"""The editor's dispatch, API-process side: one bounded queue over the replica set.

The replicas (one worker process per device), their lifecycle, GPU hand-over, admission and
readiness are service_kit.replicas.replica_set.ReplicaSet's. Here: jobs wait in this process (so a
queued job can be dropped, expired or refused cheaply) and go to whichever worker is idle; each
worker holds at most one job, so the pool always knows which job a dead worker held: that job alone
fails (503) and the worker is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from service_kit.errors import (
    MAX_RETRY_AFTER_S,
    DeadlineExceeded,
    NotReady,
    QueueFull,
    ServiceError,
    WorkerDied,
    worker_failure,
)
from service_kit.http.fairness import ANONYMOUS, RoundRobin, current_client
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
class _Pending:
    job: EditJob
    future: asyncio.Future[EditResult]
    accepted_at: float
    deadline: float
    ticket: int  # names the job to its worker's cancel flag
    client: str = ANONYMOUS  # who sent it: the queue takes clients in turn
    dispatched_at: float | None = None


@dataclass(eq=False)
class _Worker(Replica):
    cancel: Any = field(default_factory=lambda: SPAWN.Value("q", -1))
    current: _Pending | None = None
    jobs_done: int = 0


class Reservation:
    """A queue slot held while the request is validated, so a refusal costs no image decoding."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self.used = False

    async def run(self, job: EditJob) -> EditResult:
        self.used = True
        return await self._pool._run_reserved(job)


class WorkerPool(ReplicaDispatch[_Worker, LoadedModel]):
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
            on_change=self._dispatch,
            on_tick=self._tick,
            extra_args=self._cancel_flag,
        )
        # Fair sharing: one FIFO per client, taken in turn (service_kit.http.fairness).
        self._queue: RoundRobin[_Pending] = RoundRobin(lambda p: p.client)
        self._reserved = 0
        self._tickets = itertools.count(1)
        self._drain_deadline: float | None = None
        self._closed = False  # the drain is over: nothing more is queued
        self._edit_s_ema: float | None = None

    @staticmethod
    def _cancel_flag(worker: _Worker) -> tuple[Any, ...]:
        worker.cancel.value = -1
        return (worker.cancel,)

    # ----------------------------------------------------------------- lifecycle

    def in_flight(self) -> int:
        """Jobs admitted and not answered yet: being validated, queued or running."""
        return self._reserved + len(self._queue) + len(self._busy_workers())

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting work and wait for queued and running jobs, up to ``timeout_s`` after
        the drain began (a drain the server started already counts)."""
        self.start_draining()
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + timeout_s
        while (self._queue or self._busy_workers()) and time.monotonic() < self._drain_deadline:
            await asyncio.sleep(0.1)

    def fail_remaining(self) -> None:
        """End the drain: answer every queued or running job 503; admit nothing more."""
        self.start_draining()
        self._closed = True
        self._drain_deadline = time.monotonic()
        error = NotReady("the service is shutting down; the drain time is over", retry_after_s=10)
        for pending in self._queue:
            self._fail(pending, error)
        self._queue.clear()
        self._queued()
        for worker in self._busy_workers():
            assert worker.current is not None
            self._fail(worker.current, error)
            # Its answer is given: stop it at its next step, so the worker can exit.
            worker.cancel.value = worker.current.ticket

    async def stop(self, drain_timeout_s: float) -> None:
        """Drain (see ``drain``), fail what is left, stop every worker (politely, then by
        force)."""
        await self.drain(drain_timeout_s)
        self.fail_remaining()
        await self.replica_set.stop()
        for worker in self.workers:
            if worker.current is not None:
                self._fail(worker.current, NotReady("the service is shutting down"))
                worker.current = None

    # ----------------------------------------------------------------- admission

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[Reservation]:
        """Hold a queue slot; raises NotReady or QueueFull before any work is done."""
        self._check_admission()
        self._reserved += 1
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            if not reservation.used:
                self._reserved -= 1

    def _check_admission(self) -> None:
        self.replica_set.check_admission()
        # One job running per serving worker, plus the queue: what /v1/info calls max_in_flight.
        in_flight = len(self._queue) + self._reserved + len(self._busy_workers())
        serving = len(self.replica_set.serving())
        if in_flight >= serving + self.config.queue_capacity:
            self.metrics.admission.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"{in_flight} jobs are running or waiting; the service takes "
                f"{serving} running + {self.config.queue_capacity} waiting",
                retry_after_s=self.retry_after_s(),
            )

    def retry_after_s(self) -> float:
        per_job = self._edit_s_ema or 5.0
        active = max(1, len(self.replica_set.serving()))
        return min(MAX_RETRY_AFTER_S, max(1.0, per_job * (len(self._queue) + 1) / active))

    async def _run_reserved(self, job: EditJob) -> EditResult:
        self._reserved -= 1
        # A slot reserved before a drain or a release began is admitted work: it runs (a release
        # waits for it). Only after the drain is over is nothing queued any more.
        if self._closed:
            raise NotReady("the service is shutting down", retry_after_s=30)
        now = time.monotonic()
        pending = _Pending(
            job=job,
            future=asyncio.get_running_loop().create_future(),
            accepted_at=now,
            deadline=now + self.config.request_timeout_s,
            ticket=next(self._tickets),
            client=current_client(),
        )
        self._queue.append(pending)
        self._queued()
        self._dispatch()
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            self._abandon(pending)
            raise

    @staticmethod
    def new_job_id() -> str:
        return f"job-{uuid.uuid4().hex[:16]}"

    def _abandon(self, pending: _Pending) -> None:
        """The client went away: drop a queued job; ask a running one to stop at its next step."""
        self.metrics.admission.disconnects.inc()
        pending.future.cancel()  # nobody will read its outcome
        if pending in self._queue:
            self._queue.remove(pending)
            self._queued()
            logger.info("job %s dropped from the queue: client went away", pending.job.job_id)
            return
        for worker in self.workers:
            if worker.current is pending:
                worker.cancel.value = pending.ticket
                logger.info("job %s: asking worker %d to stop", pending.job.job_id, worker.index)

    # ----------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        now = time.monotonic()
        for worker in self.replica_set.serving():
            if worker.current is not None:
                continue
            pending = self._next_pending(now)
            if pending is None:
                break
            pending.dispatched_at = now
            worker.current = pending
            self.metrics.admission.waited(pending.client, now - pending.accepted_at)
            self.replica_set.send(worker, RunJob(pending.job, pending.ticket))
        self._queued()

    def _queued(self) -> None:
        self.metrics.admission.queued(self._queue.depths())

    def _next_pending(self, now: float) -> _Pending | None:
        while self._queue:
            pending = self._queue.popleft()
            if pending.future.done():
                continue
            if now > pending.deadline:
                self._expire(pending, now)
                continue
            return pending
        return None

    def _expire(self, pending: _Pending, now: float) -> None:
        self.metrics.admission.rejected.labels("deadline").inc()
        waited = now - pending.accepted_at
        self._fail(
            pending,
            DeadlineExceeded(f"the job waited {waited:.0f}s for a worker and was not started"),
        )

    def _tick(self, now: float) -> None:
        """Every monitor pass: expire queued jobs past their deadline, even while every worker
        is busy (dispatch follows)."""
        for pending in [p for p in self._queue if now > p.deadline]:
            self._queue.remove(pending)
            self._expire(pending, now)

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
        ema = self._edit_s_ema
        self._edit_s_ema = event.edit_s if ema is None else 0.8 * ema + 0.2 * event.edit_s
        if pending is None or pending.future.done() or worker.model is None:
            return
        now = time.monotonic()
        dispatched = pending.dispatched_at or now
        pending.future.set_result(
            EditResult(
                output=event.output,
                worker=worker.index,
                device=worker.device,
                model=worker.model,
                queue_wait_s=dispatched - pending.accepted_at,
                edit_s=event.edit_s,
                total_s=now - pending.accepted_at,
            )
        )

    def _finish_failed(self, worker: _Worker, event: JobFailed) -> None:
        pending = self._take_current(worker, event.job_id)
        self.metrics.jobs.labels(event.kind).inc()
        if pending is not None:
            self._fail(pending, worker_failure(event.kind, event.message, event.param))

    def _take_current(self, worker: _Worker, job_id: str) -> _Pending | None:
        pending = worker.current
        worker.current = None
        worker.cancel.value = -1
        if pending is None or pending.job.job_id != job_id:
            logger.error("worker %d reported job %s it was not given", worker.index, job_id)
            return None
        return pending

    @staticmethod
    def _fail(pending: _Pending, error: ServiceError) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)

    def _busy_workers(self) -> list[_Worker]:
        return [w for w in self.workers if w.current is not None]

    # ----------------------------------------------------------------- views

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

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
