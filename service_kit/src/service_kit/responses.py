"""Answers both services build the same way.

``json_response``: a model already serialised by pydantic (in Rust, once). Routes that return
megabytes of base64 use this instead of letting FastAPI validate and serialise the returned model
a second time; they keep ``response_model`` for the OpenAPI docs. ``model_info``: what a
backend's LoadedModel says about itself, as the wire ModelInfo.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel

from service_kit.backends import LoadedModel
from shared_schemas import ModelInfo


def model_info(model: LoadedModel) -> ModelInfo:
    """The wire form; ``deterministic`` from the model's own field where it has one (the judge),
    else from its details (the editor's option)."""
    deterministic = getattr(model, "deterministic", None)
    if deterministic is None:
        deterministic = model.details.get("deterministic") is True
    return ModelInfo(
        id=model.id,
        source=model.source,
        revision=model.revision,
        model_class=model.model_class,
        dtype=model.dtype,
        meaningful=model.meaningful,
        options=dict(model.details),
        deterministic=bool(deterministic),
    )


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
