"""ImageData: strict base64 at the edge, bytes inside, base64 again on the way out."""

from __future__ import annotations

import base64

import pytest
from pydantic import TypeAdapter, ValidationError

from shared_schemas import ImageData, sniff_format
from tests.support.images import image_bytes

ADAPTER: TypeAdapter[bytes] = TypeAdapter(ImageData)


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_image_data_accepts_png_jpeg_and_webp(fmt: str, name: str) -> None:
    raw = image_bytes(16, 16, fmt=fmt)
    assert ADAPTER.validate_python(base64.b64encode(raw).decode()) == raw
    assert sniff_format(raw) == name


def test_image_data_accepts_a_data_url() -> None:
    raw = image_bytes(8, 8)
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    assert ADAPTER.validate_python(url) == raw


def test_image_data_serialises_back_to_plain_base64() -> None:
    raw = image_bytes(8, 8)
    assert ADAPTER.dump_python(raw, mode="json") == base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64 at all!", "not valid base64"),
        ("", "is empty"),
        (base64.b64encode(b"GIF89a" + b"\0" * 20).decode(), "not a PNG, JPEG or WebP"),
        (base64.b64encode(b"hello world").decode(), "not a PNG, JPEG or WebP"),
        ("iVBORw0KGgo=x", "not valid base64"),
        (12345, "must be a base64-encoded"),
    ],
)
def test_image_data_rejects_what_is_not_an_image(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ADAPTER.validate_python(value)


def test_image_data_accepts_line_wrapped_base64() -> None:
    raw = image_bytes(8, 8)
    wrapped = base64.encodebytes(raw).decode()  # a newline every 76 characters
    assert "\n" in wrapped
    assert ADAPTER.validate_python(wrapped) == raw


def test_image_data_rejects_non_ascii_text() -> None:
    with pytest.raises(ValidationError, match="not valid base64"):
        ADAPTER.validate_python("iVBORw0KGgo€")
