"""Large JSON request bodies parsed and validated off the event loop.

FastAPI parses a declared body (``json.loads``) and validates it (for our image payloads: base64
decoding) on the event loop. A score request carries megabytes of base64 images, so each one
blocks the loop for tens of milliseconds, and every other upload in progress waits that long for
its next 64 KiB (uvicorn reads a body one buffer at a time, as the app asks for it): with a dozen
clients, requests spent seconds uploading. Here the route reads the raw bytes on the loop and
pydantic parses and validates them in a worker thread, with the same 422 as FastAPI's own.

Usage: ``body: Annotated[ScoreRequest, json_body(ScoreRequest)]`` with
``openapi_extra=json_body_openapi(ScoreRequest)`` on the route, and ``document_json_bodies(app)``
once in the app factory, so the OpenAPI document still names the request's schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service_kit.errors import UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)

_REF_TEMPLATE = "#/components/schemas/{model}"


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # as FastAPI: no Content-Type, read it as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def parse_json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """The dependency behind ``json_body``: read on the loop, parse and validate in a thread."""

    async def dependency(request: Request) -> M:
        if not _is_json(request.headers.get("content-type")):
            raise UnsupportedMediaType(
                "the request body must be JSON (Content-Type: application/json)"
            )
        # A UTF-8 byte order mark is not JSON, but RFC 8259 8.1 lets a parser ignore it (and
        # json.loads, FastAPI's parser, does).
        raw = (await request.body()).removeprefix(b"\xef\xbb\xbf")
        try:
            return await asyncio.to_thread(model.model_validate_json, raw)
        except ValidationError as exc:
            errors = [
                {**error, "loc": ("body", *error["loc"])}
                for error in exc.errors(include_url=False, include_context=False)
            ]
            raise RequestValidationError(errors) from None

    dependency.__name__ = f"parse_{model.__name__}"
    return dependency


def json_body(model: type[M]) -> Any:
    """``Depends`` marker for a JSON body of ``model``, parsed off the event loop."""
    return Depends(parse_json_body(model))


def json_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body comes from ``json_body(model)``."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF_TEMPLATE.format(model=model.__name__)}}
            },
        }
    }


def document_json_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
    """Publish ``models`` (and the models they use) under components/schemas in /openapi.json."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template=_REF_TEMPLATE, mode="validation")
            for name, definition in schema.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas.setdefault(model.__name__, schema)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
