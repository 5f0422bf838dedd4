"""The editor's app factory: settings in, FastAPI app out; workers start in the lifespan."""

from __future__ import annotations

from fastapi import FastAPI

from editor_service import __version__
from editor_service.config import EditorSettings
from editor_service.families.registry import FAMILIES
from editor_service.metrics import EditorMetrics
from editor_service.openai_images import router as openai_router
from editor_service.pool import PoolConfig, WorkerPool
from editor_service.routes import router
from service_kit.app.factory import include_api, service_app
from service_kit.app.state import ServiceState
from service_kit.http.auth import ApiKeys
from service_kit.http.json_body import document_json_bodies
from shared_schemas import EditRequest

SUMMARY = (
    f"Instruction-based image editing ({', '.join(f.title for f in FAMILIES)}), one worker per GPU."
)


def create_app(settings: EditorSettings) -> FastAPI:
    metrics = EditorMetrics()

    def build(devices: list[str]) -> WorkerPool:
        replicas = settings.replica_config("editor-worker", "model")
        config = PoolConfig(devices, settings.queue_capacity, settings.request_timeout_s, replicas)
        return WorkerPool(settings.backend_spec(), config, metrics)  # the routes' PoolDep

    state: ServiceState[WorkerPool] = ServiceState(settings, metrics, ApiKeys(settings.api_keys))
    app = service_app(state, router, build, version=__version__, summary=SUMMARY)
    include_api(app, openai_router)
    document_json_bodies(app, EditRequest)
    return app
