"""The judge: one model replica per device, each touched by its own thread only.

A batch is prepared on the CPU (chat template, image processing, tokens) in a worker thread, then
scored on whichever replica is free. The batcher prepares one batch more than there are replicas,
so the next batch is ready when a GPU frees up: CPU preprocessing overlaps the forward passes, and
several GPUs are fed by one queue (data parallelism).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

from reward_service.backends.base import (
    DeviceOutOfMemory,
    JudgeBackend,
    JudgeQuestion,
    LoadedModel,
    QuestionOutput,
)
from service_kit.errors import BackendError, NotReady, OutOfMemory
from shared_schemas import ReadyResponse

logger = logging.getLogger(__name__)

ReplicaState = Literal["loading", "ready", "failed", "released", "stopped"]
T = TypeVar("T")


class Replica:
    """One copy of the model on one device, with the one thread that may touch it."""

    def __init__(self, index: int, device: str, backend: JudgeBackend) -> None:
        self.index = index
        self.device = device
        self.backend = backend
        self.state: ReplicaState = "loading"
        self.model: LoadedModel | None = None
        self.load_s: float | None = None
        self.failure = ""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"judge-{index}")

    async def call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def load(self) -> None:
        started = time.perf_counter()
        self.state = "loading"
        try:
            self.model = await self.call(lambda: self.backend.load(self.device))
        except Exception as exc:
            self.state, self.failure = "failed", f"{type(exc).__name__}: {exc}"
            logger.exception("the judge model could not be loaded on %s", self.device)
            return
        self.state, self.load_s = "ready", time.perf_counter() - started
        logger.info("judge replica %d ready on %s (%.1fs)", self.index, self.device, self.load_s)

    async def release(self) -> None:
        if self.state == "ready":
            await self.call(self.backend.release)
            self.state = "released"

    async def close(self) -> None:
        previous, self.state = self.state, "stopped"
        if previous == "ready":
            try:
                await self.call(self.backend.release)
            except Exception:
                logger.exception("releasing the judge model on %s failed", self.device)
        await asyncio.to_thread(self._thread.shutdown, wait=True)


class Judge:
    def __init__(self, backends: Sequence[JudgeBackend], devices: Sequence[str]) -> None:
        if not backends or len(backends) != len(devices):
            raise ValueError("one backend per device, at least one")
        self.replicas = [
            Replica(i, d, b) for i, (d, b) in enumerate(zip(devices, backends, strict=True))
        ]
        self._idle: asyncio.Queue[Replica] = asyncio.Queue()
        # Each replica's backend also prepares batches (its processor is its own), one at a time.
        self._preparers: asyncio.Queue[Replica] = asyncio.Queue()
        self._prepare_threads = ThreadPoolExecutor(
            max_workers=len(self.replicas), thread_name_prefix="judge-prepare"
        )
        self._started = False

    # ----------------------------------------------------------------- state

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
        return all(r.state == "ready" for r in self.replicas)

    def ensure_ready(self) -> LoadedModel:
        states = {r.state for r in self.replicas}
        if states == {"ready"} and self.model is not None:
            return self.model
        if "failed" in states:
            raise NotReady("the judge model failed to load; see the service log", retry_after_s=60)
        if "loading" in states:
            raise NotReady("the judge model is still loading", retry_after_s=10)
        if "released" in states:
            raise NotReady("the judge model is released; POST /v1/model/load first")
        raise NotReady("the service is shutting down", retry_after_s=30)

    def readiness(self) -> ReadyResponse:
        ready = [r for r in self.replicas if r.state == "ready"]
        total = len(self.replicas)
        failed = [r for r in self.replicas if r.state == "failed"]
        if failed:
            detail = f"the judge model failed to load: {failed[0].failure}"
        elif len(ready) == total:
            detail = f"judge ready on {', '.join(self.devices)}"
        elif any(r.state == "released" for r in self.replicas):
            detail = "the judge model is released from its device"
        elif any(r.state == "loading" for r in self.replicas):
            detail = f"loading the judge model: {len(ready)} of {total} replicas ready"
        else:
            detail = "stopped"
        return ReadyResponse(
            ready=len(ready) == total,
            detail=detail,
            workers_ready=len(ready),
            workers_total=total,
        )

    # ----------------------------------------------------------------- lifecycle

    async def load(self) -> None:
        """Load every replica (at once); on failure the service stays up and says why."""
        await asyncio.gather(*(r.load() for r in self.replicas if r.state != "ready"))
        self._register()

    async def start_released(self) -> None:
        """Serve without a model until ``load`` (the GPU starts with someone else)."""
        for replica in self.replicas:
            replica.state = "released"
        self._register()

    def _register(self) -> None:
        if not self._started:
            for replica in self.replicas:
                self._preparers.put_nowait(replica)
                self._idle.put_nowait(replica)
            self._started = True

    async def release(self) -> None:
        """Free every replica's device memory once its running batch is done."""
        held = [await self._idle.get() for _ in self.replicas]
        try:
            await asyncio.gather(*(r.release() for r in self.replicas))
        finally:
            for replica in held:
                self._idle.put_nowait(replica)

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.replicas))
        await asyncio.to_thread(self._prepare_threads.shutdown, wait=True)

    # ----------------------------------------------------------------- work

    async def prepare(self, batch: list[JudgeQuestion]) -> Prepared:
        """CPU work for a batch (templates, images, tokens), on a worker thread; never the GPU."""
        self.ensure_ready()
        preparer = await self._preparers.get()
        try:
            work = await asyncio.get_running_loop().run_in_executor(
                self._prepare_threads, _guarded, lambda: preparer.backend.prepare(batch), batch
            )
        finally:
            self._preparers.put_nowait(preparer)
        return Prepared(batch, work)

    async def score(self, prepared: Prepared) -> Sequence[QuestionOutput]:
        """Run a prepared batch on the first free replica, on that replica's own thread."""
        replica = await self._idle.get()
        try:
            if replica.state != "ready":
                raise NotReady("the judge model is not loaded")
            batch = prepared.batch
            return await replica.call(
                lambda: _guarded(lambda: replica.backend.score(prepared.work), batch)
            )
        finally:
            self._idle.put_nowait(replica)


@dataclass(frozen=True, slots=True)
class Prepared:
    batch: list[JudgeQuestion]
    work: object  # what the backend's prepare returned


def _guarded(work: Callable[[], T], batch: Sequence[JudgeQuestion]) -> T:
    """Run backend work, mapping its failures to the service's errors (with the batch logged)."""
    try:
        return work()
    except DeviceOutOfMemory as exc:
        logger.warning("batch of %d (%s...): %s", len(batch), batch[0].key, exc)
        raise OutOfMemory(str(exc), retry_after_s=5) from None
    except Exception:
        logger.exception("batch of %d failed (first %s)", len(batch), batch[0].key)
        raise BackendError("the judge failed on this batch") from None
