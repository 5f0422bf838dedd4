"""Images inside JSON: base64 PNG, JPEG or WebP, checked strictly at the edge.

`ImageData` validates a base64 string (or a ``data:image/...;base64,`` URL) into raw bytes and
serialises back to plain base64. Only the container is checked here (valid base64, a known magic
number); decoding pixels, with size limits, is the services' job.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

ImageFormat = Literal["png", "jpeg", "webp"]

_DATA_URL = re.compile(r"data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)
_WHITESPACE = re.compile(r"\s+")


def sniff_format(data: bytes) -> ImageFormat | None:
    """The image format from its magic number, or None when it is not PNG, JPEG or WebP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image_b64(value: object) -> bytes:
    """Strict base64 (or data URL) to bytes; raises ValueError with a message a user can act on."""
    if isinstance(value, bytes | bytearray) and sniff_format(bytes(value)) is not None:
        return bytes(value)  # already decoded (constructing models in Python)
    if not isinstance(value, str):
        raise ValueError("must be a base64-encoded PNG, JPEG or WebP image")
    text = value
    if text.startswith("data:"):
        prefix = _DATA_URL.match(text)
        text = text[prefix.end() :] if prefix else text
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # Wrapped base64 (line breaks every 76 characters) is common; strip and try once more.
        try:
            raw = base64.b64decode(_WHITESPACE.sub("", text), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
    if not raw:
        raise ValueError("is empty")
    if sniff_format(raw) is None:
        raise ValueError("is not a PNG, JPEG or WebP image (unrecognised file signature)")
    return raw


def encode_image_b64(data: bytes) -> str:
    """Bytes to plain base64 text (no data-URL prefix)."""
    return base64.b64encode(data).decode("ascii")


ImageData = Annotated[
    bytes,
    BeforeValidator(decode_image_b64),
    PlainSerializer(encode_image_b64, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "A PNG, JPEG or WebP image, base64-encoded (a data: URL also works).",
        }
    ),
]
"""Image bytes on the Python side, base64 text on the wire."""
