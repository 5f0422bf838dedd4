"""The editor's app factory: settings in, FastAPI app out; workers start in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from editor_service import __version__
from editor_service.config import EditorSettings
from editor_service.metrics import EditorMetrics
from editor_service.openai_images import router as openai_router
from editor_service.pool import PoolConfig, WorkerPool
from editor_service.routes import router
from service_kit.devices import resolve_devices
from service_kit.wiring import include_api, service_app

logger = logging.getLogger(__name__)


def create_app(settings: EditorSettings) -> FastAPI:
    metrics = EditorMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        devices = await asyncio.to_thread(resolve_devices, settings.devices)
        settings.check_devices(devices)  # refuse options the devices cannot run, before workers
        logger.info("editor: model %s on %s", settings.model, ", ".join(devices))
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
        app.state.pool = pool
        app.state.readiness = app.state.replicas = pool.replica_set
        app.state.lifecycle = pool  # the server drains it on SIGTERM (service_kit.serving)
        await pool.start()
        try:
            yield
        finally:
            await pool.drain(settings.drain_timeout_s)
            await pool.stop()

    app = service_app(
        title="editbench editor",
        version=__version__,
        summary="Instruction-based image editing with Qwen-Image-Edit, one worker per GPU.",
        lifespan=lifespan,
        settings=settings,
        metrics=metrics,
        router=router,
    )
    include_api(app, openai_router)
    return app
