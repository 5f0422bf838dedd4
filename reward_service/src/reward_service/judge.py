"""The judge, API-process side: one worker process per device, each holding one model replica.

The batcher hands a batch to ``prepare`` (here: put the scorer's judge items, pixels and all,
into one message) and then to ``score``, which sends it to the replica with the least work and
awaits its answer.
Each replica takes two batches at a time: one runs on the model while the next is prepared (image
processing, tokens) in the worker, so CPU work overlaps the GPU's. A replica that dies fails only
the batches it held (503, retryable) and is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reward_service.backends.base import BackendSpec, JudgeItem, LoadedModel, QuestionOutput
from reward_service.messages import (
    BatchDone,
    BatchFailed,
    CancelBatch,
    JudgeEvent,
    LoadModel,
    ReleaseModel,
    ReplicaLoadFailed,
    ReplicaReady,
    ReplicaReleased,
    ScoreBatch,
)
from reward_service.worker import judge_worker_main
from service_kit.errors import (
    BackendError,
    NotReady,
    OutOfMemory,
    UpstreamError,
    UpstreamUnavailable,
    WorkerDied,
)
from service_kit.images import RGBImage
from service_kit.processes import RestartPolicy, Supervisor, WorkerHandle, cpu_threads_per_worker
from shared_schemas import ReadyResponse

logger = logging.getLogger(__name__)

PIPELINE_DEPTH = 2  # batches a replica holds: one on the model, one being prepared


@dataclass(frozen=True, slots=True)
class Packed:
    """A batch ready for a worker, and how many of its questions belong to each item."""

    batch: ScoreBatch
    sizes: list[int]


@dataclass(eq=False)
class _Replica(WorkerHandle):
    model: LoadedModel | None = None
    load_s: float | None = None
    failure: str = ""
    ever_ready: bool = False
    outstanding: dict[int, asyncio.Future[BatchDone]] = field(default_factory=dict)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)


class Judge:
    def __init__(
        self,
        spec: BackendSpec,
        devices: Sequence[str],
        *,
        log_level: str = "info",
        load_on_start: bool = True,
        policy: RestartPolicy | None = None,
        load_timeout_s: float = 3600.0,
        on_batch: Callable[[int, str, BatchDone], None] | None = None,
    ) -> None:
        if not devices:
            raise ValueError("the judge needs at least one device")
        self.spec = spec
        self.replicas = [_Replica(i, d) for i, d in enumerate(devices)]
        self._log_level = log_level
        self._released = not load_on_start
        self._load_timeout_s = load_timeout_s
        self._on_batch = on_batch  # per-batch timings from the worker, for the metrics
        self._batch_ids = itertools.count(1)
        self._draining = False
        self._changed = asyncio.Event()  # a batch finished or a replica changed state
        self._background: set[asyncio.Task[None]] = set()
        self._supervisor = Supervisor(
            self.replicas,
            target=judge_worker_main,
            args=self._worker_args,
            name="judge-worker",
            policy=policy or RestartPolicy(),
            on_event=self._on_event,
            on_exit=self._on_exit,
        )

    def _worker_args(self, replica: _Replica) -> tuple[Any, ...]:
        devices = [r.device for r in self.replicas]
        threads = cpu_threads_per_worker(devices) if replica.device == "cpu" else None
        return (
            replica.index,
            replica.device,
            threads,
            self.spec,
            not self._released,
            self._log_level,
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Spawn every replica's worker; they load their model on their own."""
        await self._supervisor.start()

    def start_draining(self) -> None:
        """Report not ready and refuse new requests; batches already admitted still run."""
        self._draining = True

    def given_up(self) -> bool:
        """Every replica was given up on (the restart policy will not start any again)."""
        return all(r.state == "failed" for r in self.replicas)

    async def stop(self) -> None:
        self._draining = True
        await self._supervisor.stop()
        for replica in self.replicas:
            self._fail_outstanding(replica, NotReady("the service is shutting down"))

    async def release(self) -> None:
        """Free every replica's device memory once the batches it holds are answered."""
        self._released = True
        while any(r.outstanding for r in self.replicas):
            await self._wait_change()
        targets = [r for r in self.replicas if r.state in ("ready", "starting")]
        for replica in targets:
            self._supervisor.send(replica, ReleaseModel())
        await self._until(targets, ("released", "failed", "restarting"))

    async def load(self) -> None:
        """Load the model on every released replica; returns once they answer."""
        self._released = False
        # A worker that has just started says first whether it loaded or waits for this call.
        await self._until(self.replicas, ("ready", "released", "failed"))
        targets = [r for r in self.replicas if r.state == "released"]
        for replica in targets:
            replica.state = "starting"
            self._supervisor.send(replica, LoadModel())
        await self._until(targets, ("ready", "failed"))

    async def _until(self, targets: list[_Replica], states: tuple[str, ...]) -> None:
        deadline = time.monotonic() + self._load_timeout_s
        while any(r.state not in states for r in targets) and time.monotonic() < deadline:
            await self._wait_change(timeout_s=0.5)

    async def _wait_change(self, timeout_s: float | None = None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    # ----------------------------------------------------------------- work

    async def prepare(self, items: list[JudgeItem[RGBImage]]) -> Packed:
        """The items as one message; the worker does the preparation proper."""
        self._ensure_can_serve()
        batch = ScoreBatch(next(self._batch_ids), tuple(items))
        return Packed(batch, [len(item.questions) for item in items])

    async def score(self, packed: Packed) -> list[tuple[QuestionOutput, ...]]:
        """Run a batch on the replica with the least work; each item's outputs, in order."""
        outputs = iter(await self._score(packed.batch))
        return [tuple(itertools.islice(outputs, size)) for size in packed.sizes]

    async def _score(self, batch: ScoreBatch) -> Sequence[QuestionOutput]:
        replica = await self._replica_with_room()
        future: asyncio.Future[BatchDone] = asyncio.get_running_loop().create_future()
        replica.outstanding[batch.batch_id] = future
        try:
            async with replica.sending:  # one writer per pipe at a time
                sent = await asyncio.to_thread(self._supervisor.send, replica, batch)
            if not sent:
                raise WorkerDied(f"judge replica {replica.index} is gone", retry_after_s=5)
            try:
                done = await asyncio.shield(future)
            except asyncio.CancelledError:
                # Nobody wants the answer: have the worker skip the batch if it has not begun.
                cancel = asyncio.create_task(self._send(replica, CancelBatch(batch.batch_id)))
                self._background.add(cancel)
                cancel.add_done_callback(self._background.discard)
                raise
        finally:
            replica.outstanding.pop(batch.batch_id, None)
            self._changed.set()
        if len(done.outputs) != batch.questions:
            raise BackendError(
                f"the judge answered {len(done.outputs)} of {batch.questions} questions"
            )
        return list(done.outputs)

    async def _send(self, replica: _Replica, message: object) -> None:
        async with replica.sending:
            await asyncio.to_thread(self._supervisor.send, replica, message)

    async def _replica_with_room(self) -> _Replica:
        """The ready replica with the least work; while every replica is busy or restarting,
        wait (a replica that died fails only the batches it held, not the ones waiting)."""
        while True:
            self._ensure_can_serve()
            ready = [
                r
                for r in self.replicas
                if r.state == "ready" and len(r.outstanding) < PIPELINE_DEPTH
            ]
            if ready:
                return min(ready, key=lambda r: len(r.outstanding))
            await self._wait_change(timeout_s=1.0)

    # ----------------------------------------------------------------- events

    def _on_event(self, replica: _Replica, event: JudgeEvent) -> None:
        if isinstance(event, ReplicaReady):
            replica.model, replica.pid, replica.load_s = event.model, event.pid, event.load_s
            replica.state, replica.ever_ready = "ready", True
            logger.info(
                "judge replica %d ready on %s (%.1fs)", replica.index, replica.device, event.load_s
            )
        elif isinstance(event, ReplicaLoadFailed):
            replica.failure = event.message
            logger.error("judge replica %d failed to load: %s", replica.index, event.message)
        elif isinstance(event, ReplicaReleased):
            replica.state = "released"
        elif isinstance(event, BatchDone | BatchFailed):
            future = replica.outstanding.get(event.batch_id)
            if future is not None and not future.done():
                if isinstance(event, BatchDone):
                    future.set_result(event)
                    if self._on_batch is not None:
                        self._on_batch(replica.index, replica.device, event)
                elif event.kind == "out_of_memory":
                    future.set_exception(OutOfMemory(event.message, retry_after_s=5))
                elif event.kind == "endpoint_unavailable":
                    future.set_exception(UpstreamUnavailable(event.message, retry_after_s=5))
                elif event.kind == "endpoint_refused":
                    future.set_exception(UpstreamError(event.message))
                else:
                    future.set_exception(BackendError(event.message))
        self._changed.set()

    def _on_exit(self, replica: _Replica, _exitcode: int | None) -> None:
        self._fail_outstanding(
            replica, WorkerDied(f"judge replica {replica.index} died", retry_after_s=5)
        )
        self._changed.set()

    @staticmethod
    def _fail_outstanding(replica: _Replica, error: Exception) -> None:
        for future in replica.outstanding.values():
            if not future.done():
                future.set_exception(error)

    # ----------------------------------------------------------------- views

    @property
    def devices(self) -> list[str]:
        return [r.device for r in self.replicas]

    @property
    def model(self) -> LoadedModel | None:
        return next((r.model for r in self.replicas if r.model is not None), None)

    @property
    def load_s(self) -> float | None:
        times = [r.load_s for r in self.replicas if r.load_s is not None]
        return max(times) if times else None

    @property
    def loaded(self) -> bool:
        return not self._released and all(r.state == "ready" for r in self.replicas)

    def ensure_ready(self) -> LoadedModel:
        """The model, if a new request may be admitted; else NotReady (503) saying why."""
        if self._draining:
            raise NotReady("the service is shutting down", retry_after_s=30)
        state = self._serving_state()
        if state.ready and self.model is not None:
            return self.model
        self._ensure_can_serve()
        raise NotReady(state.detail, retry_after_s=10)

    def _ensure_can_serve(self) -> None:
        """Raise NotReady unless a replica is serving or will be again (one restarting counts):
        admitted batches still run while draining or while a replica restarts."""
        if self._released:
            raise NotReady("the judge model is released; POST /v1/model/load first")
        if self.given_up():
            raise NotReady(self._serving_state().detail, retry_after_s=30)

    def readiness(self) -> ReadyResponse:
        """Ready when every replica has loaded once, none was given up on, one is serving, and
        the service is not draining."""
        state = self._serving_state()
        if self._draining:
            return state.model_copy(update={"ready": False, "detail": "draining"})
        return state

    def _serving_state(self) -> ReadyResponse:
        total = len(self.replicas)
        serving = sum(r.state == "ready" for r in self.replicas)
        failed = [r for r in self.replicas if r.state == "failed"]
        loading = [r for r in self.replicas if not r.ever_ready]
        if self._released:
            detail = "the judge model is released from its device"
        elif failed:
            reason = failed[0].failure or "it keeps exiting"
            detail = f"the judge model failed to load on {failed[0].device}: {reason}"
        elif loading:
            detail = f"loading the judge model: {total - len(loading)} of {total} replicas ready"
            tried = [r.failure for r in loading if r.failure]
            if tried:
                detail = f"the judge model failed to load: {tried[0]} (trying again)"
        elif serving == 0:
            detail = "every judge replica is restarting"
        else:
            detail = f"judge ready on {', '.join(self.devices)}"
        ready = not (self._released or failed or loading or serving == 0)
        return ReadyResponse(ready=ready, detail=detail, workers_ready=serving, workers_total=total)
