"""The worker pool, API-process side: one spawned process per device, one bounded queue.

Jobs wait in this process (so a queued job can be dropped, expired or refused cheaply) and go to
whichever worker is idle; each worker holds at most one job. Every worker has its own pipes, so a
worker killed mid-write corrupts nothing the others use, and the pool always knows which job a dead
worker held: that job alone fails (503) and the worker is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
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
    BackendError,
    DeadlineExceeded,
    InvalidImage,
    NotReady,
    OutOfMemory,
    QueueFull,
    ServiceError,
    WorkerDied,
)
from shared_schemas import ReadyResponse, WorkerInfo, WorkerState

logger = logging.getLogger(__name__)

_CTX = mp.get_context("spawn")


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
class _Worker:
    index: int
    device: str
    state: WorkerState = "starting"
    process: Any = None  # SpawnProcess
    jobs: Connection | None = None  # API -> worker
    events: Connection | None = None  # worker -> API
    cancel: Any = field(default_factory=lambda: _CTX.Value("q", -1))
    current: _Pending | None = None
    model: LoadedModel | None = None
    pid: int | None = None
    jobs_done: int = 0
    restarts: int = 0
    recent_exits: collections.deque[float] = field(default_factory=collections.deque)
    ever_ready: bool = False
    restart_at: float | None = None


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
        self._queue: collections.deque[_Pending] = collections.deque()
        self._reserved = 0
        self._sequence = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._wakeup_recv, self._wakeup_send = _CTX.Pipe(duplex=False)
        self._monitor: asyncio.Task[None] | None = None
        self._closing = False
        self._draining = False
        self._released = not config.load_on_start
        self._edit_s_ema: float | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Spawn every worker; returns at once (readiness says when they have loaded)."""
        self._loop = asyncio.get_running_loop()
        for worker in self.workers:
            self._spawn(worker)
        self._reader = threading.Thread(target=self._read_events, name="pool-events", daemon=True)
        self._reader.start()
        self._monitor = asyncio.create_task(self._monitor_loop(), name="pool-monitor")

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting work and wait (up to ``timeout_s``) for queued and running jobs."""
        self._draining = True
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._busy_workers()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Fail what is left, stop every worker (politely, then by force), stop the threads."""
        self._closing = True
        self._draining = True
        for pending in list(self._queue):
            self._fail(pending, NotReady("the service is shutting down", retry_after_s=10))
        self._queue.clear()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await asyncio.to_thread(self._stop_processes)
        for worker in self.workers:
            if worker.current is not None:
                self._fail(worker.current, NotReady("the service is shutting down"))
                worker.current = None
        self._wakeup_send.send(None)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5)

    def _stop_processes(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive() and worker.jobs:
                with contextlib.suppress(OSError):
                    worker.jobs.send(None)
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            process.join(10)
            if process.is_alive():
                logger.warning("worker %d did not stop; terminating", worker.index)
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
            worker.state = "stopped"
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
            raise NotReady("the model is released from the GPU; POST /v1/admin/load first")
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
        return min(60.0, max(1.0, per_job * (len(self._queue) + 1) / active))

    async def _run_reserved(self, job: EditJob) -> EditResult:
        assert self._loop is not None
        self._reserved -= 1
        if self._draining:
            raise NotReady("the service is shutting down", retry_after_s=30)
        now = time.monotonic()
        pending = _Pending(
            job=job,
            future=self._loop.create_future(),
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
                worker.cancel.value = int(pending.job.job_id.split("-", 1)[0])
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
            self._send(worker, pending.job)
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

    def _send(self, worker: _Worker, message: Any) -> None:
        try:
            assert worker.jobs is not None
            worker.jobs.send(message)
        except (OSError, ValueError, AssertionError):
            # The worker is gone; the monitor notices the exit and fails its job.
            logger.warning("worker %d: could not send %s", worker.index, type(message).__name__)

    # ----------------------------------------------------------------- events

    def _read_events(self) -> None:
        """Thread: wait on every worker's event pipe; hand events to the loop."""
        assert self._loop is not None
        while not self._closing:
            connections: list[Any] = [self._wakeup_recv]
            connections += [w.events for w in self.workers if w.events is not None]
            try:
                ready = wait(connections, timeout=1.0)
            except OSError:
                continue
            for conn in ready:
                if conn is self._wakeup_recv:
                    with contextlib.suppress(EOFError, OSError):
                        conn.recv()
                    continue
                try:
                    event = conn.recv()
                except (EOFError, OSError):
                    # The worker closed its end (it exited); the monitor handles the exit.
                    self._loop.call_soon_threadsafe(self._forget_events, conn)
                    continue
                self._loop.call_soon_threadsafe(self._on_event, event)

    def _forget_events(self, conn: Connection) -> None:
        for worker in self.workers:
            if worker.events is conn:
                worker.events = None
                conn.close()

    def _on_event(self, event: WorkerEvent) -> None:
        worker = self.workers[event.worker]
        if isinstance(event, WorkerReady):
            worker.model, worker.pid = event.model, event.pid
            worker.ever_ready = True
            worker.state = "ready"
            self.metrics.model_load_seconds.observe(event.load_s)
            logger.info("worker %d ready (pid %d, %.1fs)", worker.index, event.pid, event.load_s)
        elif isinstance(event, WorkerLoadFailed):
            logger.error("worker %d failed to load: %s", worker.index, event.message)
            # The process exits next; the monitor restarts it with backoff.
        elif isinstance(event, WorkerReleased):
            worker.state = "released"
            if event.release_s:
                self.metrics.handover_seconds.labels("release").observe(event.release_s)
        elif isinstance(event, JobDone):
            self._finish(worker, event)
        elif isinstance(event, JobFailed):
            self._finish_failed(worker, event)
        self.metrics.set_worker_state(worker.index, worker.state)
        self._dispatch()

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
        if event.kind == "invalid_input":
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

    # ----------------------------------------------------------------- supervision

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.monitor_interval_s)
            try:
                self._supervise(time.monotonic())
            except Exception:
                logger.exception("pool monitor pass failed")

    def _supervise(self, now: float) -> None:
        for worker in self.workers:
            process = worker.process
            if worker.state == "restarting" and worker.restart_at and now >= worker.restart_at:
                self._spawn(worker)
            elif (
                process is not None
                and not process.is_alive()
                and worker.state
                not in (
                    "failed",
                    "stopped",
                    "restarting",
                )
            ):
                self._on_worker_exit(worker, process.exitcode, now)
        # Expire queued jobs past their deadline even while every worker is busy.
        for pending in [p for p in self._queue if now > p.deadline]:
            self._queue.remove(pending)
            self._expire(pending, now)
        self.metrics.queue_depth.set(len(self._queue))
        self._dispatch()

    def _on_worker_exit(self, worker: _Worker, exitcode: int | None, now: float) -> None:
        was_loading = worker.state == "starting"
        logger.error(
            "worker %d (pid %s) exited with code %s%s",
            worker.index,
            worker.pid,
            exitcode,
            " while loading" if was_loading else "",
        )
        if worker.current is not None:
            self._fail(
                worker.current,
                WorkerDied(f"worker {worker.index} died while running this job", retry_after_s=5),
            )
            self.metrics.jobs.labels("worker_died").inc()
            worker.current = None
        self._close_pipes(worker)
        exits = worker.recent_exits
        exits.append(now)
        while exits and exits[0] < now - self.config.restart_window_s:
            exits.popleft()
        if len(exits) > self.config.max_restarts:
            worker.state = "failed"
            logger.error(
                "worker %d exited %d times in %.0fs; giving up on it",
                worker.index,
                len(exits),
                self.config.restart_window_s,
            )
        else:
            backoff = self.config.restart_backoff_s
            delay = backoff[min(len(exits) - 1, len(backoff) - 1)]
            worker.state = "restarting"
            worker.restart_at = now + delay
            logger.info("restarting worker %d in %.1fs", worker.index, delay)
        self.metrics.set_worker_state(worker.index, worker.state)

    def _spawn(self, worker: _Worker) -> None:
        if worker.process is not None:
            worker.restarts += 1
            self.metrics.worker_restarts.inc()
        jobs_recv, jobs_send = _CTX.Pipe(duplex=False)
        events_recv, events_send = _CTX.Pipe(duplex=False)
        worker.cancel.value = -1
        process = _CTX.Process(
            target=worker_main,
            args=(
                worker.index,
                worker.device,
                self._cpu_threads() if worker.device == "cpu" else None,
                self.spec,
                not self._released,
                jobs_recv,
                events_send,
                worker.cancel,
                self.config.log_level,
            ),
            name=f"editor-worker-{worker.index}",
            daemon=True,
        )
        process.start()
        jobs_recv.close()
        events_send.close()
        worker.process, worker.jobs, worker.events = process, jobs_send, events_recv
        worker.pid = process.pid
        worker.state = "starting"
        worker.restart_at = None
        self.metrics.set_worker_state(worker.index, "starting")
        if self._wakeup_send is not None:
            with contextlib.suppress(OSError):
                self._wakeup_send.send(None)  # the reader must wait on the new pipe too

    def _cpu_threads(self) -> int:
        cpu_workers = sum(w.device == "cpu" for w in self.workers)
        return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))

    @staticmethod
    def _close_pipes(worker: _Worker) -> None:
        for conn in (worker.jobs, worker.events):
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
        worker.jobs = None
        worker.events = None

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
            self._send(worker, ReleaseModel())
        await self._wait_for(targets, lambda w: w.state in ("released", "failed", "restarting"))
        return time.monotonic() - started

    async def load(self) -> float:
        """Load the model on every released worker; returns seconds until all are serving."""
        started = time.monotonic()
        self._released = False
        targets = [w for w in self.workers if w.state == "released"]
        for worker in targets:
            worker.state = "starting"
            self.metrics.set_worker_state(worker.index, "starting")
            self._send(worker, LoadModel())
        await self._wait_for(targets, lambda w: w.state in ("ready", "busy", "failed"))
        seconds = time.monotonic() - started
        self.metrics.handover_seconds.labels("load").observe(seconds)
        return seconds

    async def _wait_for(self, targets: list[_Worker], done: Callable[[_Worker], bool]) -> None:
        deadline = time.monotonic() + self.config.load_timeout_s
        while not all(done(w) for w in targets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    @property
    def loaded(self) -> bool:
        return not self._released and any(w.state in ("ready", "busy") for w in self.workers)

    # ----------------------------------------------------------------- views

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def released(self) -> bool:
        return self._released

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
        if self._draining:
            return ReadyResponse(
                ready=False, detail="draining", workers_ready=serving, workers_total=total
            )
        if self._released:
            detail = "model released from the device"
            return ReadyResponse(
                ready=False, detail=detail, workers_ready=serving, workers_total=total
            )
        failed = [w.index for w in self.workers if w.state == "failed"]
        if failed:
            detail = f"worker(s) {failed} keep failing; see the service log"
            return ReadyResponse(
                ready=False, detail=detail, workers_ready=serving, workers_total=total
            )
        loading = [w.index for w in self.workers if not w.ever_ready]
        if loading:
            detail = f"{total - len(loading)} of {total} workers loaded"
            return ReadyResponse(
                ready=False, detail=detail, workers_ready=serving, workers_total=total
            )
        if serving == 0:
            detail = "every worker is restarting"
            return ReadyResponse(ready=False, detail=detail, workers_ready=0, workers_total=total)
        return ReadyResponse(
            ready=True,
            detail=f"{serving} of {total} workers serving",
            workers_ready=serving,
            workers_total=total,
        )
