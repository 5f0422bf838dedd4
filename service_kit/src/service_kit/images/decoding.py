"""Decoding client images safely.

Only PNG, JPEG and WebP decoders are ever tried; the file's structure (service_kit.images.structure)
and then the pixel count and the shape are checked from the bytes and the header before any
pixel is decoded (a few-hundred-byte PNG can declare 20000x20000; a small JPEG can hold thousands
of scans); truncated files raise instead of decoding half grey. A JPEG larger than the model
needs is decoded at a reduced scale (libjpeg's DCT scaling: 1/2, 1/4 or 1/8), which is several
times cheaper than decoding it whole and resizing.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from service_kit.errors import ImageTooLarge, InvalidImage
from service_kit.images.structure import check_structure
from shared_schemas import ImageFormat, sniff_format

_PIL_FORMATS: dict[ImageFormat, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

# Keep Pillow's own guard on as a backstop, and never decode truncated files.
ImageFile.LOAD_TRUNCATED_IMAGES = False

MAX_ASPECT_RATIO = 100
"""Longest side over shortest side. The Qwen-VL image processors of both models raise on more
than 200:1, and the editor first rescales its source to about a megapixel with each side rounded
to 32 pixels, which makes a thin image thinner (1:165 becomes 1:200): without this bound such an
image is a 500 from inside the model, and in the judge it fails every request of its batch."""


@dataclass(frozen=True, slots=True)
class RGBImage:
    """8-bit RGB pixels, row-major: how images cross between an API process and its workers.

    The API process decodes (in threads, off the GPU's critical path); workers only see pixels.
    """

    width: int
    height: int
    pixels: bytes

    @classmethod
    def from_pil(cls, image: Image.Image) -> RGBImage:
        rgb = image.convert("RGB")
        return cls(rgb.width, rgb.height, rgb.tobytes())

    def to_pil(self) -> Image.Image:
        return Image.frombytes("RGB", (self.width, self.height), self.pixels)


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: ImageFormat
    width: int
    height: int
    passes: int = 1  # passes over the picture to decode it (a progressive JPEG's scans)

    @property
    def decode_cost(self) -> float:
        """Megapixels times passes: what decoding costs, in about 25-60 ms units of a core."""
        return self.width * self.height * self.passes / 1e6


def read_header(
    data: bytes,
    *,
    max_pixels: int,
    param: str = "image",
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
) -> ImageHeader:
    """Format and size from the header alone; raises InvalidImage or ImageTooLarge."""
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage("not a PNG, JPEG or WebP image", param=param)
    passes = check_structure(data, fmt, param=param)  # before Pillow walks the structure
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{param} has too many pixels", param=param) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage(f"{param} is not a readable {fmt.upper()} image", param=param) from None
    if width < 1 or height < 1:
        raise InvalidImage(f"{param} has no pixels", param=param)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{param} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            param=param,
        )
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise InvalidImage(
            f"{param} is {width}x{height}; its sides may differ by at most {max_aspect_ratio:g}:1",
            param=param,
        )
    return ImageHeader(fmt, width, height, passes)


def decode_image(
    data: bytes, *, max_pixels: int, param: str = "image", scale_to_pixels: int | None = None
) -> Image.Image:
    """Decode to RGB after the structure and header checks; raises InvalidImage or
    ImageTooLarge. With ``scale_to_pixels``, a JPEG with more pixels is decoded at the smallest
    DCT scale that still has at least that many (other formats decode whole)."""
    header = read_header(data, max_pixels=max_pixels, param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[header.format]])
            pixels = header.width * header.height
            if header.format == "jpeg" and scale_to_pixels and pixels > scale_to_pixels:
                factor = math.sqrt(scale_to_pixels / pixels)
                wanted = (math.ceil(header.width * factor), math.ceil(header.height * factor))
                img.draft(img.mode, wanted)  # at least ``wanted`` on each side
            img.load()  # first frame only, for animated WebP
            return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{param} has too many pixels", param=param) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage(
            f"{param} is truncated or corrupt ({header.format.upper()})", param=param
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def fit_within(image: Image.Image, pixels: int) -> Image.Image:
    """``image`` scaled down (aspect kept) to at most ``pixels`` pixels; unchanged if it fits."""
    if image.width * image.height <= pixels:
        return image
    factor = math.sqrt(pixels / (image.width * image.height))
    size = (max(1, int(image.width * factor)), max(1, int(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
