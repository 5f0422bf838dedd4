"""The worker pool, API-process side: one spawned process per device, one bounded queue.

Jobs wait in this process (so a queued job can be dropped, expired or refused cheaply) and go to
whichever worker is idle; each worker holds at most one job, so the pool always knows which job a
dead worker held: that job alone fails (503) and the worker is restarted with backoff
(service_kit.processes.Supervisor).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from editor_service.backends.base import BackendSpec, EditJob, EditOutput, LoadedModel
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
from editor_service.metrics import EditorMetrics
from editor_service.worker import worker_main
from service_kit.errors import (
    MAX_RETRY_AFTER_S,
    BackendError,
    DeadlineExceeded,
    InvalidImage,
    InvalidInput,
    NotReady,
    OutOfMemory,
    QueueFull,
    ServiceError,
    WorkerDied,
)
from service_kit.processes import (
    SPAWN,
    RestartPolicy,
    Supervisor,
    WorkerHandle,
    cpu_threads_per_worker,
)
from shared_schemas import ReadyResponse, WorkerInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    devices: list[str]
    queue_capacity: int
    request_timeout_s: float
    log_level: str = "info"
    load_on_start: bool = True
    load_timeout_s: float = 3600.0
    max_restarts: int = 5  # exits within restart_window_s before a worker is given up on
    restart_window_s: float = 300.0
    restart_backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    monitor_interval_s: float = 0.25


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
    dispatched_at: float | None = None


@dataclass(eq=False)
class _Worker(WorkerHandle):
    cancel: Any = field(default_factory=lambda: SPAWN.Value("q", -1))
    current: _Pending | None = None
    model: LoadedModel | None = None
    jobs_done: int = 0
    ever_ready: bool = False


class Reservation:
    """A queue slot held while the request is validated, so a refusal costs no image decoding."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self.used = False

    async def run(self, job: EditJob) -> EditResult:
        self.used = True
        return await self._pool._run_reserved(job)


class WorkerPool:
    def __init__(self, spec: BackendSpec, config: PoolConfig, metrics: EditorMetrics) -> None:
        self.spec = spec
        self.config = config
        self.metrics = metrics
        self.workers = [_Worker(i, d) for i, d in enumerate(config.devices)]
        self._supervisor = Supervisor(
            self.workers,
            target=worker_main,
            args=self._worker_args,
            name="editor-worker",
            policy=RestartPolicy(
                config.max_restarts, config.restart_window_s, config.restart_backoff_s
            ),
            on_event=self._on_event,
            on_exit=self._on_exit,
            on_tick=self._tick,
            interval_s=config.monitor_interval_s,
        )
        self._queue: collections.deque[_Pending] = collections.deque()
        self._reserved = 0
        self._sequence = itertools.count(1)
        self._draining = False
        self._drain_deadline: float | None = None
        self._closed = False  # the drain is over: nothing more is queued
        self._released = not config.load_on_start
        self._edit_s_ema: float | None = None
        self._restarts_counted = 0

    def _worker_args(self, worker: _Worker) -> tuple[Any, ...]:
        threads = cpu_threads_per_worker(self.config.devices) if worker.device == "cpu" else None
        worker.cancel.value = -1
        return (
            worker.index,
            worker.device,
            threads,
            self.spec,
            not self._released,
            worker.cancel,
            self.config.log_level,
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Spawn every worker; returns at once (readiness says when they have loaded)."""
        await self._supervisor.start()

    def start_draining(self) -> None:
        """Admit no new job (503) and report not ready; admitted jobs still run."""
        self._draining = True

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
        self.metrics.queue_depth.set(0)
        for worker in self._busy_workers():
            assert worker.current is not None
            self._fail(worker.current, error)
            # Its answer is given: stop it at its next step, so the worker can exit.
            worker.cancel.value = _sequence(worker.current.job.job_id)

    def given_up(self) -> bool:
        """Every worker was given up on (the restart policy will not start any again)."""
        return all(w.state == "failed" for w in self.workers)

    async def stop(self) -> None:
        """Fail what is left, stop every worker (politely, then by force)."""
        self.fail_remaining()
        await self._supervisor.stop()
        for worker in self.workers:
            if worker.current is not None:
                self._fail(worker.current, NotReady("the service is shutting down"))
                worker.current = None
            self.metrics.set_worker_state(worker.index, "stopped")

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
        if self._draining:
            raise NotReady("the service is shutting down", retry_after_s=30)
        if self._released:
            raise NotReady("the model is released from the GPU; POST /v1/model/load first")
        if not any(w.ever_ready for w in self.workers):
            raise NotReady("the model is still loading", retry_after_s=10)
        if all(w.state == "failed" for w in self.workers):
            raise NotReady("no worker could start; see the service log", retry_after_s=30)
        # One job running per serving worker, plus the queue: what /v1/info calls max_in_flight.
        in_flight = len(self._queue) + self._reserved + len(self._busy_workers())
        serving = sum(w.state in ("ready", "busy") for w in self.workers)
        if in_flight >= serving + self.config.queue_capacity:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFull(
                f"{in_flight} jobs are running or waiting; the service takes "
                f"{serving} running + {self.config.queue_capacity} waiting",
                retry_after_s=self.retry_after_s(),
            )

    def retry_after_s(self) -> float:
        per_job = self._edit_s_ema or 5.0
        active = max(1, sum(w.state in ("ready", "busy") for w in self.workers))
        return min(MAX_RETRY_AFTER_S, max(1.0, per_job * (len(self._queue) + 1) / active))

    async def _run_reserved(self, job: EditJob) -> EditResult:
        self._reserved -= 1
        # A slot reserved before a drain began is admitted work: it runs. Only after the drain
        # is over (or the pool stopped) is nothing queued any more.
        if self._closed:
            raise NotReady("the service is shutting down", retry_after_s=30)
        now = time.monotonic()
        pending = _Pending(
            job=job,
            future=asyncio.get_running_loop().create_future(),
            accepted_at=now,
            deadline=now + self.config.request_timeout_s,
        )
        self._queue.append(pending)
        self.metrics.queue_depth.set(len(self._queue))
        self._dispatch()
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            self._abandon(pending)
            raise

    def new_job_id(self) -> str:
        return f"{next(self._sequence)}-{uuid.uuid4().hex[:12]}"

    def _abandon(self, pending: _Pending) -> None:
        """The client went away: drop a queued job; ask a running one to stop at its next step."""
        self.metrics.client_disconnects.inc()
        pending.future.cancel()  # nobody will read its outcome
        if pending in self._queue:
            self._queue.remove(pending)
            self.metrics.queue_depth.set(len(self._queue))
            logger.info("job %s dropped from the queue: client went away", pending.job.job_id)
            return
        for worker in self.workers:
            if worker.current is pending:
                worker.cancel.value = _sequence(pending.job.job_id)
                logger.info("job %s: asking worker %d to stop", pending.job.job_id, worker.index)

    # ----------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.state != "ready":
                continue
            pending = self._next_pending(now)
            if pending is None:
                break
            pending.dispatched_at = now
            worker.current = pending
            worker.state = "busy"
            self.metrics.set_worker_state(worker.index, "busy")
            self.metrics.queue_wait.observe(now - pending.accepted_at)
            self._supervisor.send(worker, pending.job)
        self.metrics.queue_depth.set(len(self._queue))

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
        self.metrics.rejected.labels("deadline").inc()
        waited = now - pending.accepted_at
        self._fail(
            pending,
            DeadlineExceeded(f"the job waited {waited:.0f}s for a worker and was not started"),
        )

    def _tick(self, now: float) -> None:
        """Every monitor pass: expire queued jobs past their deadline, even while every worker
        is busy; keep the worker metrics current; hand out work."""
        for pending in [p for p in self._queue if now > p.deadline]:
            self._queue.remove(pending)
            self._expire(pending, now)
        restarts = sum(w.restarts for w in self.workers)
        if restarts > self._restarts_counted:
            self.metrics.worker_restarts.inc(restarts - self._restarts_counted)
            self._restarts_counted = restarts
        for worker in self.workers:
            self.metrics.set_worker_state(worker.index, worker.state)  # type: ignore[arg-type]
        self._dispatch()

    # ----------------------------------------------------------------- events

    def _on_event(self, worker: _Worker, event: WorkerEvent) -> None:
        if isinstance(event, WorkerReady):
            worker.model, worker.pid = event.model, event.pid
            worker.ever_ready = True
            worker.state = "ready"
            self.metrics.model_load_seconds.observe(event.load_s)
            logger.info("worker %d ready (pid %d, %.1fs)", worker.index, event.pid, event.load_s)
        elif isinstance(event, WorkerLoadFailed):
            logger.error("worker %d failed to load: %s", worker.index, event.message)
            # The process exits next; the supervisor restarts it with backoff.
        elif isinstance(event, WorkerReleased):
            worker.state = "released"
            if event.release_s:
                self.metrics.handover_seconds.labels("release").observe(event.release_s)
        elif isinstance(event, JobDone):
            self._finish(worker, event)
        elif isinstance(event, JobFailed):
            self._finish_failed(worker, event)
        self.metrics.set_worker_state(worker.index, worker.state)  # type: ignore[arg-type]
        self._dispatch()

    def _on_exit(self, worker: _Worker, _exitcode: int | None) -> None:
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
        if pending is None:
            return
        error: ServiceError
        if event.kind == "invalid_input" and event.param not in (None, "image"):
            error = InvalidInput(event.message, param=event.param)
        elif event.kind == "invalid_input":
            error = InvalidImage(event.message, param="image")
        elif event.kind == "out_of_memory":
            error = OutOfMemory(event.message, retry_after_s=5)
        elif event.kind == "cancelled":
            error = NotReady("the job was cancelled")  # nobody is listening any more
        else:
            error = BackendError(event.message)
        self._fail(pending, error)

    def _take_current(self, worker: _Worker, job_id: str) -> _Pending | None:
        pending = worker.current
        worker.current = None
        worker.cancel.value = -1
        if worker.state == "busy":
            worker.state = "ready"
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

    # ----------------------------------------------------------------- GPU hand-over

    async def release(self) -> float:
        """Free every worker's device memory (after running jobs finish); returns seconds.

        New requests are refused (503) from the moment this is called.
        """
        started = time.monotonic()
        self._released = True
        while self._queue or self._busy_workers():
            await asyncio.sleep(0.05)
        targets = [w for w in self.workers if w.state in ("ready", "starting")]
        for worker in targets:
            self._supervisor.send(worker, ReleaseModel())
        await self._wait_for(targets, lambda w: w.state in ("released", "failed", "restarting"))
        return time.monotonic() - started

    async def load(self) -> float:
        """Load the model on every released worker; returns seconds until all are serving."""
        started = time.monotonic()
        self._released = False
        targets = [w for w in self.workers if w.state == "released"]
        for worker in targets:
            worker.state = "starting"
            self._supervisor.send(worker, LoadModel())
        await self._wait_for(targets, lambda w: w.state in ("ready", "busy", "failed"))
        seconds = time.monotonic() - started
        self.metrics.handover_seconds.labels("load").observe(seconds)
        return seconds

    async def _wait_for(self, targets: list[_Worker], done: Callable[[_Worker], bool]) -> None:
        deadline = time.monotonic() + self.config.load_timeout_s
        while not all(done(w) for w in targets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # ----------------------------------------------------------------- views

    @property
    def loaded(self) -> bool:
        return not self._released and any(w.state in ("ready", "busy") for w in self.workers)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def loaded_model(self) -> LoadedModel | None:
        return next((w.model for w in self.workers if w.model is not None), None)

    def worker_infos(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                index=w.index,
                device=w.device,
                state=w.state,
                pid=w.pid,
                jobs_done=w.jobs_done,
                restarts=w.restarts,
            )
            for w in self.workers
        ]

    def readiness(self) -> ReadyResponse:
        """Ready when every worker has loaded once, none was given up on, one is serving."""
        total = len(self.workers)
        serving = sum(w.state in ("ready", "busy") for w in self.workers)
        failed = [w.index for w in self.workers if w.state == "failed"]
        loading = [w.index for w in self.workers if not w.ever_ready]
        if self._draining:
            detail = "draining"
        elif self._released:
            detail = "model released from the device"
        elif failed:
            detail = f"worker(s) {failed} keep failing; see the service log"
        elif loading:
            detail = f"{total - len(loading)} of {total} workers loaded"
        elif serving == 0:
            detail = "every worker is restarting"
        else:
            detail = f"{serving} of {total} workers serving"
        ready = not (self._draining or self._released or failed or loading or serving == 0)
        return ReadyResponse(ready=ready, detail=detail, workers_ready=serving, workers_total=total)


def _sequence(job_id: str) -> int:
    """Job ids are ``<sequence>-<hex>``; a worker's cancel value names a job by its sequence."""
    return int(job_id.split("-", 1)[0])
