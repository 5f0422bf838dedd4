"""What every app factory installs: middleware, the error envelope, the probes, the API routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from service_kit.app.lifespan import replica_lifespan
from service_kit.app.model_routes import model_router
from service_kit.app.probes import probe_router
from service_kit.app.state import Hosted, ServiceState, service_state
from service_kit.errors import install_exception_handlers
from service_kit.http.auth import ApiKeyMiddleware, api_key_dependencies
from service_kit.http.body_limit import BodyLimitMiddleware
from service_kit.http.client_identity import ClientIdentityMiddleware
from service_kit.http.framing import AmbiguousFramingMiddleware
from service_kit.http.metrics import HttpMetricsMiddleware
from shared_schemas import ErrorResponse


def install_common(app: FastAPI, state: ServiceState[Any]) -> None:
    """The app's state, body limit, API keys, HTTP metrics, error handlers and /health, /ready,
    /metrics."""
    app.state.service = state  # the one thing kept in app.state (service_kit.app.state)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=state.settings.max_body_bytes)
    # Inside the key check: who the request is from (service_kit.http.client_identity).
    app.add_middleware(ClientIdentityMiddleware, keys=state.api_keys)
    # Outside the body limit: a request without a key is refused before its body is read.
    app.add_middleware(ApiKeyMiddleware, keys=state.api_keys)
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    # Added last, so it is outermost: an ambiguously framed request reaches nothing else.
    app.add_middleware(AmbiguousFramingMiddleware)
    install_exception_handlers(app)
    app.include_router(probe_router())


def include_api(app: FastAPI, router: APIRouter) -> None:
    """Include a service's own routes, behind its API keys if it has any (after install_common);
    with keys, every route's OpenAPI entry lists the 401 too."""
    keys = service_state(app).api_keys
    responses: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "No API key, or not a valid one."}}
        if keys.enabled
        else {}
    )
    app.include_router(router, dependencies=api_key_dependencies(keys), responses=responses)


def service_app(
    state: ServiceState[Any],
    router: APIRouter,
    build: Callable[[list[str]], Hosted],
    *,
    version: str,
    summary: str,
) -> FastAPI:
    """A service's app, named by its metrics' prefix: the replica lifespan over what ``build``
    makes (service_kit.app.lifespan), its state, the common parts, its own routes and the model
    hand-over routes."""
    service = state.metrics.prefix
    lifespan = replica_lifespan(state.settings, service, build)
    # No redirect from "/v1/edits/" to "/v1/edits": its Location is built from the client's Host
    # header (a redirect anywhere, carrying the body with it on a 307); a 404 in the envelope.
    app = FastAPI(
        title=f"editbench {service}",
        version=version,
        summary=summary,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    install_common(app, state)
    include_api(app, router)
    include_api(app, model_router())
    return app
