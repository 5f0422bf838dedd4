"""POST /v1/model/release and /v1/model/load, the same on both services.

The hand-over of a GPU between the editor and the judge: the app's replica set (a
service_kit.replicas.replica_set.ReplicaSet) releases or loads, one hand-over at a time, and the
answer says the model state it ended in.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service_kit.app.state import service_state
from service_kit.errors import NotReady
from service_kit.replicas.replica_set import ReplicaSet
from shared_schemas import ErrorResponse, ModelStateResponse

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (500, 503)}


def model_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["model"])

    @router.post("/model/release", response_model=ModelStateResponse, responses=_ERRORS)
    async def release_model(request: Request) -> ModelStateResponse:
        """Free the model's device memory once the admitted work is answered (e.g. for the
        other service); new work is refused (503, model_state released) from now on."""
        replicas: ReplicaSet[Any] = service_state(request.app).dispatch().replica_set
        seconds = await replicas.release()
        state = replicas.model_state()
        return ModelStateResponse(
            action="release", seconds=seconds, loaded=state == "loaded", model_state=state
        )

    @router.post("/model/load", response_model=ModelStateResponse, responses=_ERRORS)
    async def load_model(request: Request) -> ModelStateResponse:
        """Load the model onto every device again; answers once every replica serves (503
        with the model state if it does not: released again meanwhile, or a replica failed)."""
        replicas: ReplicaSet[Any] = service_state(request.app).dispatch().replica_set
        seconds = await replicas.load()
        state = replicas.model_state()
        if state != "loaded":
            raise NotReady(replicas.readiness().detail, retry_after_s=30, model_state=state)
        return ModelStateResponse(action="load", seconds=seconds, loaded=True, model_state=state)

    return router
