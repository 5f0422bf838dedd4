"""The reward app factory: settings in, FastAPI app out; the judge loads in the lifespan."""

from __future__ import annotations

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
from service_kit.app.factory import service_app
from service_kit.http.json_body import document_json_bodies
from shared_schemas import ScoreRequest

SUMMARY = "A Qwen3-VL judge for image edits: expected or generated 0-10 scores, batched."


def batch_key(item: ItemWork) -> tuple[str, int]:
    """Items share a batch only with items read the same way (a request has one mode)."""
    first = item.questions[0]
    return first.mode, first.max_new_tokens if first.mode == "generate" else 0


class JudgeDispatch:
    """The judge's dispatch as the lifespan and the server drive it (service_kit.app.state.Hosted):
    the batcher holds the admitted work, the judge's replicas run it and say whether the service
    is ready; the routes read the protocols here too."""

    def __init__(
        self, judge: Judge, batcher: MicroBatcher[Any, Any], protocols: ProtocolRegistry
    ) -> None:
        self.judge = judge
        self.batcher = batcher
        self.protocols = protocols
        self.replica_set = judge.replica_set

    async def start(self) -> None:
        await self.judge.start()
        self.batcher.start()

    async def stop(self, drain_timeout_s: float) -> None:
        await self.batcher.stop(drain_timeout_s)
        await self.judge.stop()

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

    def build(devices: list[str]) -> JudgeDispatch:
        judge = Judge(
            settings.backend_spec(),
            devices,
            config=settings.replica_config("judge-worker", "judge model"),
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
        return JudgeDispatch(judge, batcher, registry)  # the routes' JudgeDep, BatcherDep...

    app = service_app(settings, metrics, router, build, version=__version__, summary=SUMMARY)
    document_json_bodies(app, ScoreRequest)
    return app
