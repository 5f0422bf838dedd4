"""Images in and out of the editor: decode a client's file to pixels, encode pixels to a file.

Both run in the API process, in threads, so a worker's GPU never waits on them. PNG goes through
libspng (imagecodecs): at level 0 it stores a megapixel in ~3 ms, where Pillow's encoder filters
every row first (~50 ms per megapixel even uncompressed).
"""

from __future__ import annotations

import io

import imagecodecs
import numpy as np

from editor_service.backends.base import RGBImage
from service_kit.images.decoding import decode_image, read_header
from shared_schemas import ImageFormat

# The pipelines scale the source to about a megapixel before anything sees it; a larger JPEG is
# decoded at the smallest DCT scale that keeps at least this many pixels.
SOURCE_PIXELS = 1024 * 1024


def inspect_source(data: bytes, max_pixels: int, param: str = "image") -> float:
    """What decoding an input image will cost (structure and header only); raises InvalidImage,
    ImageTooLarge or ImageTooComplex naming ``param``."""
    return read_header(data, max_pixels=max_pixels, param=param).decode_cost


def decode_to_rgb(data: bytes, max_pixels: int, param: str = "image") -> RGBImage:
    """A client's PNG, JPEG or WebP to RGB pixels; raises InvalidImage or ImageTooLarge naming
    ``param``."""
    return RGBImage.from_pil(
        decode_image(data, max_pixels=max_pixels, param=param, scale_to_pixels=SOURCE_PIXELS)
    )


def encode_rgb(
    image: RGBImage, fmt: ImageFormat, compress_level: int = 1, quality: int | None = None
) -> bytes:
    """Lossless PNG (zlib ``compress_level``, 0 = stored); JPEG at ``quality`` (default 95);
    WebP lossless, or lossy at ``quality`` when one is given."""
    if fmt == "png":
        pixels = np.frombuffer(image.pixels, dtype=np.uint8).reshape(image.height, image.width, 3)
        return bytes(imagecodecs.spng_encode(pixels, level=compress_level))
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.to_pil().save(buffer, format="JPEG", quality=95 if quality is None else quality)
    elif quality is None:
        image.to_pil().save(buffer, format="WEBP", lossless=True)
    else:
        image.to_pil().save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()
