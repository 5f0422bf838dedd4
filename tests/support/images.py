"""Test images made on the fly (deterministic noise with some structure)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def make_image(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    """A gradient in red and green, a diagonal ramp in blue, plus seeded noise.

    Built in blocks of rows in small integers, the noise drawn block by block (the same draws
    and pixels as whole-grid int64 arithmetic): fresh memory is slow to fault in here, and a
    4096x4096 picture took 15-20 s that way; now under a second."""
    rng = np.random.default_rng(seed)
    xs, ys = np.arange(width, dtype=np.int32), np.arange(height, dtype=np.int32)
    red = (xs * 255 // max(1, width - 1)).astype(np.int16)
    green = (ys * 255 // max(1, height - 1)).astype(np.int16)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, 2**20 // (3 * max(1, width)))  # about a million draws a block
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        block = rng.integers(0, 40, size=(bottom - top, width, 3)).astype(np.int16)
        block[..., 0] += red[None, :]
        block[..., 1] += green[top:bottom, None]
        block[..., 2] += ((xs % 256)[None, :] + (ys[top:bottom] % 256)[:, None]) % 256
        pixels[top:bottom] = np.minimum(block, 255)
    return Image.fromarray(pixels, "RGB")


def image_bytes(width: int = 64, height: int = 64, seed: int = 0, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    make_image(width, height, seed).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_b64_image(text: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(text)))
    img.load()
    return img
