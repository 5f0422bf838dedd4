"""A model already serialised by pydantic (in Rust, once), as the answer.

Routes that return megabytes of base64 use ``json_response`` instead of letting FastAPI validate
and serialise the returned model a second time; they keep ``response_model`` for the OpenAPI docs.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
