"""The reward app factory: settings in, FastAPI app out; the judge loads in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from reward_service import __version__
from reward_service.backends.base import QuestionOutput
from reward_service.batcher import MicroBatcher
from reward_service.config import RewardSettings
from reward_service.judge import Judge
from reward_service.metrics import RewardMetrics
from reward_service.protocols import ProtocolRegistry
from reward_service.routes import router
from reward_service.scorer import ItemWork, item_cost
from service_kit.json_body import document_json_bodies
from service_kit.processes import RestartPolicy
from service_kit.wiring import service_app
from shared_schemas import ScoreRequest

logger = logging.getLogger(__name__)


def batch_key(item: ItemWork) -> tuple[str, int]:
    """Items share a batch only with items read the same way (a request has one mode)."""
    first = item.questions[0]
    return first.mode, first.max_new_tokens if first.mode == "generate" else 0


class _Lifecycle:
    """What the server drains on SIGTERM (service_kit.serving.Lifecycle): the batcher holds the
    admitted work, the judge says whether the service is ready."""

    def __init__(self, judge: Judge, batcher: MicroBatcher[Any, Any]) -> None:
        self.judge = judge
        self.batcher = batcher

    def start_draining(self) -> None:
        self.judge.start_draining()
        self.batcher.start_draining()

    def in_flight(self) -> int:
        return self.batcher.in_flight()

    def fail_remaining(self) -> None:
        self.batcher.fail_remaining()

    def given_up(self) -> bool:
        return self.judge.given_up()


def create_app(settings: RewardSettings, protocols: ProtocolRegistry | None = None) -> FastAPI:
    """The app; protocols are loaded (and a bad protocol file refused) here, before serving."""
    metrics = RewardMetrics()
    registry = protocols if protocols is not None else ProtocolRegistry.load(settings.protocols_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        devices = await asyncio.to_thread(settings.resolve_devices)
        logger.info("reward: judge %s on %s", settings.model, ", ".join(devices))
        judge = Judge(
            settings.backend_spec(),
            devices,
            log_level=settings.log_level,
            load_on_start=settings.load_on_start,
            policy=RestartPolicy(settings.max_worker_restarts, settings.restart_window_s),
            on_batch=metrics.worker_batch,
            metrics=metrics.replicas,
        )
        batcher: MicroBatcher[ItemWork, tuple[QuestionOutput, ...]] = MicroBatcher(
            judge.score,
            pack=judge.pack,
            max_batch_cost=settings.max_batch_images,
            max_wait_s=settings.max_wait_s,
            capacity=settings.queue_capacity,
            timeout_s=settings.request_timeout_s,
            key=batch_key,
            cost=item_cost,
            observer=metrics,
            batches_out=len(devices) * settings.pipeline_depth,  # the one back-pressure owner
        )
        judge.work_in_flight = batcher.in_flight  # a release waits for admitted work
        app.state.judge = judge
        app.state.readiness = app.state.replicas = judge.replica_set
        app.state.batcher = batcher
        app.state.lifecycle = _Lifecycle(judge, batcher)  # drained on SIGTERM (service_kit)
        await judge.start()
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop(settings.drain_timeout_s)
            await judge.stop()

    app = service_app(
        title="editbench reward",
        version=__version__,
        summary="A Qwen3-VL judge for image edits: expected or generated 0-10 scores, batched.",
        lifespan=lifespan,
        settings=settings,
        metrics=metrics,
        router=router,
    )
    app.state.protocols = registry
    document_json_bodies(app, ScoreRequest)
    return app
