"""/health (liveness), /ready (readiness) and /metrics, the same on every service.

They read the app's state (service_kit.app.state): the replica set's readiness and the metrics.
Probes never touch a model or a queue.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service_kit.app.state import service_state
from service_kit.errors import NotReady
from service_kit.http.metrics import CONTENT_TYPE_LATEST
from shared_schemas import ErrorResponse, HealthResponse, ReadyResponse


def probe_router() -> APIRouter:
    router = APIRouter(tags=["probes"])

    @router.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness: the process answers."""
        return HealthResponse()

    @router.get(
        "/ready",
        response_model=ReadyResponse,
        responses={503: {"model": ErrorResponse, "description": "Not ready (yet)."}},
    )
    async def ready(request: Request) -> ReadyResponse:
        """Readiness: 200 once every worker has loaded its model and the service is not draining."""
        state: ReadyResponse = service_state(request.app).dispatch().replica_set.readiness()
        if not state.ready:
            raise NotReady(state.detail, retry_after_s=5, model_state=state.model_state)
        return state

    @router.get("/metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        body = service_state(request.app).metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
