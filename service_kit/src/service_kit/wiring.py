"""What every app factory installs: middleware, the error envelope, the probes, the API routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from service_kit.auth import ApiKeyMiddleware, ApiKeys, api_key_dependencies
from service_kit.body_limit import BodyLimitMiddleware
from service_kit.decoding import DecodeGate
from service_kit.errors import install_exception_handlers
from service_kit.fairness import ClientIdentityMiddleware
from service_kit.hosting import Hosted, replica_lifespan
from service_kit.metrics import HttpMetricsMiddleware, ServiceMetrics
from service_kit.model_routes import model_router
from service_kit.probes import probe_router
from service_kit.settings import ModelServiceSettings, ServiceSettings
from shared_schemas import ErrorResponse


def install_common(app: FastAPI, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
    """Body limit, API keys, HTTP metrics, error handlers and /health, /ready, /metrics."""
    app.state.metrics = metrics
    app.state.decode_gate = DecodeGate()
    app.state.api_keys = ApiKeys(settings.api_keys)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # Inside the key check: who the request is from, for fair sharing (service_kit.fairness).
    app.add_middleware(ClientIdentityMiddleware, keys=app.state.api_keys)
    # Outside the body limit: a request without a key is refused before its body is read.
    app.add_middleware(ApiKeyMiddleware, keys=app.state.api_keys)
    # Added last, so it is outermost: it sees every answer, 401s and 413s included.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    install_exception_handlers(app)
    app.include_router(probe_router())


def include_api(app: FastAPI, router: APIRouter) -> None:
    """Include a service's own routes, behind its API keys if it has any (after install_common);
    with keys, every route's OpenAPI entry lists the 401 too."""
    keys: ApiKeys = app.state.api_keys
    responses: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "No API key, or not a valid one."}}
        if keys.enabled
        else {}
    )
    app.include_router(router, dependencies=api_key_dependencies(keys), responses=responses)


def service_app(
    settings: ModelServiceSettings,
    metrics: ServiceMetrics,
    router: APIRouter,
    build: Callable[[FastAPI, list[str]], Hosted],
    *,
    version: str,
    summary: str,
) -> FastAPI:
    """A service's app, named by its metrics' prefix: the replica lifespan over what ``build``
    makes (service_kit.hosting), its settings, the common parts, its own routes and the model
    hand-over routes."""
    service = metrics.prefix
    lifespan = replica_lifespan(settings, service, build)
    app = FastAPI(title=f"editbench {service}", version=version, summary=summary, lifespan=lifespan)
    app.state.settings = settings
    install_common(app, settings, metrics)
    include_api(app, router)
    include_api(app, model_router())
    return app
