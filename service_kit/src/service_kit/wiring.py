"""What every app factory installs: middleware, the error envelope, the probes."""

from __future__ import annotations

from fastapi import FastAPI

from service_kit.body_limit import BodyLimitMiddleware
from service_kit.errors import install_exception_handlers
from service_kit.metrics import HttpMetricsMiddleware, ServiceMetrics
from service_kit.probes import probe_router
from service_kit.settings import ServiceSettings


def install_common(app: FastAPI, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
    """Body limit, HTTP metrics, error handlers and /health, /ready, /metrics."""
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # Added last, so it is outermost: it sees every answer, 413s included.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    install_exception_handlers(app)
    app.include_router(probe_router())
