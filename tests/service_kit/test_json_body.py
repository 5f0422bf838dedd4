"""json_body: a JSON body parsed off the event loop answers exactly like FastAPI's own."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from service_kit.errors import install_exception_handlers
from service_kit.http.json_body import document_json_bodies, json_body, json_body_openapi

pytestmark = pytest.mark.anyio


class Part(BaseModel):
    name: str = Field(min_length=1)


class Order(BaseModel):
    parts: list[Part] = Field(min_length=1)
    count: int = Field(ge=1, le=10)


def make_app() -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    @app.post("/orders", openapi_extra=json_body_openapi(Order))
    async def create(order: Annotated[Order, json_body(Order)]) -> dict[str, int]:
        return {"parts": len(order.parts), "count": order.count}

    document_json_bodies(app, Order)
    return app


async def post(content: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/orders", content=content, headers=headers)


async def test_a_valid_body_reaches_the_handler() -> None:
    response = await post(b'{"parts": [{"name": "a"}, {"name": "b"}], "count": 3}')
    assert response.status_code == 200
    assert response.json() == {"parts": 2, "count": 3}


async def test_an_out_of_range_field_is_a_422_naming_the_field() -> None:
    response = await post(b'{"parts": [{"name": "a"}], "count": 11}')
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["param"] == "count"


async def test_a_nested_field_error_names_its_path() -> None:
    response = await post(b'{"parts": [{"name": ""}], "count": 1}')
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "parts.0.name"


async def test_broken_json_is_a_422() -> None:
    response = await post(b'{"parts": [')
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


async def test_a_body_that_is_not_json_is_a_415() -> None:
    response = await post(b"parts=a", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]["message"]


async def test_a_body_without_content_type_is_read_as_json() -> None:
    response = await post(b'{"parts": [{"name": "a"}], "count": 1}', content_type=None)
    assert response.status_code == 200


def test_the_openapi_document_names_the_body_schema_and_its_parts() -> None:
    document = make_app().openapi()
    body = document["paths"]["/orders"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Order"}
    schemas = document["components"]["schemas"]
    assert schemas["Order"]["properties"]["parts"]["items"] == {"$ref": "#/components/schemas/Part"}
    assert "Part" in schemas


async def test_a_utf8_byte_order_mark_before_the_json_is_ignored() -> None:
    response = await post(b'\xef\xbb\xbf{"parts": [{"name": "a"}], "count": 1}')
    assert response.status_code == 200, response.text
