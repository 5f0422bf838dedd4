"""The reward app factory: settings in, FastAPI app out; the judge loads in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from reward_service import __version__
from reward_service.config import RewardSettings
from reward_service.judge import Judge
from reward_service.metrics import RewardMetrics
from reward_service.protocols import ProtocolRegistry
from reward_service.routes import router
from reward_service.scorer import ItemWork, item_cost
from service_kit.app.factory import service_app
from service_kit.app.state import ServiceState
from service_kit.http.auth import ApiKeys
from service_kit.http.json_body import document_json_bodies
from service_kit.replicas.admission import BatchPolicy
from shared_schemas import ScoreRequest

SUMMARY = (
    "A vision-language judge for image edits (a Qwen-VL model through transformers, or any model "
    "behind an OpenAI-compatible endpoint): expected or generated scores under a protocol, batched."
)


def batch_key(item: ItemWork) -> tuple[str, int]:
    """Items share a batch only with items read the same way (a request has one mode)."""
    first = item.questions[0]
    return first.mode, first.max_new_tokens if first.mode == "generate" else 0


@dataclass(eq=False)
class RewardState(ServiceState[Judge]):
    """The app's state (service_kit.app.state), with the protocols the routes read."""

    protocols: ProtocolRegistry = field(kw_only=True)


def create_app(settings: RewardSettings, protocols: ProtocolRegistry | None = None) -> FastAPI:
    """The app; protocols are loaded (and a bad protocol file refused) here, before serving."""
    metrics = RewardMetrics()
    registry = protocols if protocols is not None else ProtocolRegistry.load(settings.protocols_dir)

    def build(devices: list[str]) -> Judge:
        return Judge(
            settings.backend_spec(),
            devices,
            config=settings.replica_config("judge-worker", "judge model"),
            metrics=metrics,
            policy=BatchPolicy(
                max_batch_cost=settings.max_batch_images,
                max_wait_s=settings.max_wait_s,
                key=batch_key,
                cost=item_cost,
            ),
            capacity=settings.queue_capacity,
            timeout_s=settings.request_timeout_s,
            pipeline_depth=settings.pipeline_depth,
        )

    state = RewardState(settings, metrics, ApiKeys(settings.api_keys), protocols=registry)
    app = service_app(state, router, build, version=__version__, summary=SUMMARY)
    document_json_bodies(app, ScoreRequest)
    return app
