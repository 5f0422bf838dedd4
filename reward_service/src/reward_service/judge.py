"""The judge model and the one thread that touches it.

Loading, every batch and releasing run on a single dedicated thread, so the backend never sees
two callers at once and the event loop never blocks on the model. The batcher's consumer hands
batches here one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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

JudgeState = Literal["loading", "ready", "failed", "stopped"]
T = TypeVar("T")


class Judge:
    def __init__(self, backend: JudgeBackend, device: str) -> None:
        self.backend = backend
        self.device = device
        self.state: JudgeState = "loading"
        self.model: LoadedModel | None = None
        self.load_s: float | None = None
        self._failure = ""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge-model")

    async def _on_model_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def load(self) -> None:
        """Load the model; on failure the service stays up and says why on /ready."""
        started = time.perf_counter()
        try:
            model = await self._on_model_thread(lambda: self.backend.load(self.device))
        except Exception as exc:
            self.state = "failed"
            self._failure = f"{type(exc).__name__}: {exc}"
            logger.exception("the judge model could not be loaded on %s", self.device)
            return
        self.model, self.state = model, "ready"
        self.load_s = time.perf_counter() - started
        logger.info("judge ready: %s on %s (%.1fs)", model.id, self.device, self.load_s)

    def ensure_ready(self) -> LoadedModel:
        if self.state == "ready" and self.model is not None:
            return self.model
        if self.state == "loading":
            raise NotReady("the judge model is still loading", retry_after_s=10)
        if self.state == "failed":
            raise NotReady("the judge model failed to load; see the service log", retry_after_s=60)
        raise NotReady("the service is shutting down", retry_after_s=30)

    def readiness(self) -> ReadyResponse:
        ready = self.state == "ready"
        detail = {
            "loading": f"loading the judge model on {self.device}",
            "ready": f"judge ready on {self.device}",
            "failed": f"the judge model failed to load: {self._failure}",
            "stopped": "stopped",
        }[self.state]
        return ReadyResponse(ready=ready, detail=detail, workers_ready=int(ready), workers_total=1)

    async def run(self, batch: list[JudgeQuestion]) -> Sequence[QuestionOutput]:
        """Prepare and score one batch on the model thread."""
        return await self._on_model_thread(lambda: self._run_sync(batch))

    def _run_sync(self, batch: list[JudgeQuestion]) -> Sequence[QuestionOutput]:
        if self.state != "ready":
            raise NotReady("the judge model is not loaded")
        try:
            prepared = self.backend.prepare(batch)
            return self.backend.score(prepared)
        except DeviceOutOfMemory as exc:
            logger.warning("batch of %d (%s...): %s", len(batch), batch[0].key, exc)
            raise OutOfMemory(str(exc), retry_after_s=5) from None
        except Exception:
            logger.exception("batch of %d failed (first %s)", len(batch), batch[0].key)
            raise BackendError("the judge failed on this batch") from None

    async def close(self) -> None:
        """Free the model's memory and stop the model thread."""
        previous, self.state = self.state, "stopped"
        if previous == "ready":
            try:
                await self._on_model_thread(self.backend.release)
            except Exception:
                logger.exception("releasing the judge model failed")
        # Waits for a load still in progress, off the event loop.
        await asyncio.to_thread(self._thread.shutdown, wait=True)
