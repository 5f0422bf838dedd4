"""The editor's app factory: settings in, FastAPI app out; workers start in the lifespan."""

from __future__ import annotations

from fastapi import FastAPI

from editor_service import __version__
from editor_service.config import EditorSettings
from editor_service.metrics import EditorMetrics
from editor_service.openai_images import router as openai_router
from editor_service.pool import PoolConfig, WorkerPool
from editor_service.routes import router
from service_kit.hosting import replica_lifespan
from service_kit.wiring import include_api, service_app


def create_app(settings: EditorSettings) -> FastAPI:
    metrics = EditorMetrics()

    def build(app: FastAPI, devices: list[str]) -> WorkerPool:
        config = PoolConfig(
            devices=devices,
            queue_capacity=settings.queue_capacity,
            request_timeout_s=settings.request_timeout_s,
            log_level=settings.log_level,
            max_restarts=settings.max_worker_restarts,
            restart_window_s=settings.restart_window_s,
            load_on_start=settings.load_on_start,
        )
        pool = WorkerPool(settings.backend_spec(), config, metrics)
        app.state.pool = pool  # the routes' PoolDep
        return pool

    app = service_app(
        title="editbench editor",
        version=__version__,
        summary="Instruction-based image editing with Qwen-Image-Edit, one worker per GPU.",
        lifespan=replica_lifespan(settings, "editor", build),
        settings=settings,
        metrics=metrics,
        router=router,
    )
    include_api(app, openai_router)
    return app
