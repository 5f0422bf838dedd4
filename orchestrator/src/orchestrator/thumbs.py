"""Small JPEG previews for report.html (the report must open from disk, fast, for 10k items)."""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image

logger = logging.getLogger(__name__)

THUMB_SIDE = 256
# Thumbnail kinds (thumbs/<kind>/) of an item's further input images, in order, beside "source"
# and "edited"; its reference image's kind is "reference".
INPUT_ROLES = ("input_2", "input_3", "input_4", "input_5", "input_6")


def make_thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes | None:
    """A JPEG no larger than ``side`` pixels, or None when the image cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (side, side))  # JPEG: decode at reduced size
                image.thumbnail((side, side))
                rgb = image.convert("RGB")
    except Exception as exc:  # undecodable input is reported in the record, not fatal here
        logger.warning("cannot make a thumbnail: %s", exc)
        return None
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=82)
    return buffer.getvalue()
