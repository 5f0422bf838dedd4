"""A corpus of malformed and hostile images and request bodies, made by code (nothing checked in).

``image_cases()`` are files: truncated PNG/JPEG/WebP at many offsets, wrong magic numbers,
decompression bombs (a header that declares far more pixels than the file holds), formats outside
the allow-list, and unusual but valid images (CMYK, 16-bit, palette, animated, extreme shapes).
``editor_requests()`` and ``reward_requests()`` wrap every image into each service's routes and add
payloads that are hostile in themselves: wrong JSON types, deep nesting, extra fields, huge
strings, non-base64, data URLs, broken multipart forms, wrong content types, lying bodies.

Every case says what a correct service answers: ``ok`` (2xx: the input is valid, however odd) or
``refused`` (a 4xx in the error envelope), sometimes with the exact status. The services are
expected to run with ``LIMITS`` (a small pixel and body limit, so that the cases at the limits
stay cheap).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageCms

Expect = Literal["ok", "refused"]

MAX_IMAGE_PIXELS = 512 * 512
MAX_BODY_MB = 4
LIMITS = {"MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS), "MAX_BODY_MB": str(MAX_BODY_MB)}
"""Settings (without the EDITOR_/REWARD_ prefix) the services under test run with."""

MAX_ASPECT_RATIO = 100


@dataclass(frozen=True)
class ImageCase:
    name: str
    data: bytes
    expect: Expect
    status: int | None = None  # the exact status, where one is required (413 for bombs)


@dataclass(frozen=True)
class HostileRequest:
    """One HTTP request: a raw body with its headers, so nothing is tidied up on the way."""

    name: str
    path: str
    body: bytes | Iterator[bytes]
    headers: dict[str, str]
    expect: Expect
    status: int | None = None
    method: str = "POST"
    notes: dict[str, Any] = field(default_factory=dict)


# --- building blocks ----------------------------------------------------------------------------


def _noise(width: int, height: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256])
    base = np.moveaxis(base, 0, -1)[..., :channels]
    noise = rng.integers(0, 40, size=(height, width, channels))
    return np.clip(base + noise, 0, 255).astype("uint8")


def rgb(width: int = 48, height: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(_noise(width, height, seed))


def save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def raw_png(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    color_type: int = 2,
    idat: bytes | None = None,
    before_idat: bytes = b"",
    after_idat: bytes = b"",
) -> bytes:
    """A PNG assembled chunk by chunk: the IHDR may declare anything; the IDAT holds what it
    holds (a little zlib data by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    pixels = idat if idat is not None else zlib.compress(b"\x00" * 64)
    return (
        PNG_MAGIC
        + png_chunk(b"IHDR", ihdr)
        + before_idat
        + png_chunk(b"IDAT", pixels)
        + after_idat
        + png_chunk(b"IEND", b"")
    )


def png_idat_span(data: bytes) -> tuple[int, int]:
    """Byte offsets of the first IDAT chunk's start and the last IDAT chunk's end."""
    offset, first, last = 8, -1, -1
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if kind == b"IDAT":
            first = offset if first < 0 else first
            last = end
        offset = end
    return first, last


def zlib_of_zeros(size: int) -> bytes:
    """zlib data that inflates to ``size`` zero bytes (about size/1000 bytes on the wire)."""
    compressor = zlib.compressobj(9)
    block = b"\x00" * 2**20
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + compressor.flush()


def jpeg_sof(width: int, height: int, *, precision: int = 8) -> bytes:
    """A baseline JPEG header declaring ``width`` x ``height`` with a few bytes of scan data."""
    quant = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, precision, height, width, 1) + b"\x01\x11\x00"
    dht = (
        b"\xff\xc4"
        + struct.pack(">H", 3 + 16 + 1)
        + b"\x00"
        + bytes([1] + [0] * 15)
        + b"\x00"
        + b"\xff\xc4"
        + struct.pack(">H", 3 + 16 + 1)
        + b"\x10"
        + bytes([1] + [0] * 15)
        + b"\x00"
    )
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x00\x3f\x00"
    return b"\xff\xd8" + quant + sof + dht + sos + b"\x00" * 16 + b"\xff\xd9"


def riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def webp_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def webp_vp8x(width: int, height: int) -> bytes:
    """An extended WebP header whose canvas is ``width`` x ``height`` (up to 2**24 each)."""
    vp8x = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    frame = save(rgb(16, 16), "WEBP", lossless=True)[12:]  # a real VP8L chunk after the header
    return riff(webp_chunk(b"VP8X", vp8x) + frame)


def webp_vp8l(width: int, height: int) -> bytes:
    """A lossless WebP bitstream header declaring ``width`` x ``height`` (up to 16384 each)."""
    bits = (width - 1) | ((height - 1) << 14)
    header = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    return riff(webp_chunk(b"VP8L", header))


def webp_vp8(width: int, height: int) -> bytes:
    """A lossy WebP key-frame header declaring ``width`` x ``height`` (up to 16383 each)."""
    frame_tag = b"\x10\x02\x00"  # key frame, version 0, shown, first partition size 16
    header = frame_tag + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 16
    return riff(webp_chunk(b"VP8 ", header))


def truncations(data: bytes, offsets: list[int]) -> list[tuple[int, bytes]]:
    return [(n, data[:n]) for n in sorted(set(offsets)) if 0 <= n < len(data)]


# --- images -------------------------------------------------------------------------------------


def _valid_images() -> list[ImageCase]:
    base = rgb(48, 40)
    cmyk = save(base.convert("CMYK"), "JPEG", quality=90)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: decoded as stored, without the EXIF turn
    gray16 = Image.fromarray(_noise(32, 32)[..., 0].astype("<u2") * 257)
    rgba = Image.fromarray(_noise(32, 32)).convert("RGBA")
    rgba.putalpha(128)
    frames = [rgb(32, 32, seed=s) for s in range(3)]
    side = int(MAX_IMAGE_PIXELS**0.5)
    solid = Image.new("RGB", (side, side), (10, 200, 30))
    return [
        ImageCase("png-rgb", save(base, "PNG"), "ok"),
        ImageCase("png-rgba-half-transparent", save(rgba, "PNG"), "ok"),
        ImageCase("png-gray", save(base.convert("L"), "PNG"), "ok"),
        ImageCase("png-gray-alpha", save(base.convert("LA"), "PNG"), "ok"),
        ImageCase("png-1bit", save(base.convert("1"), "PNG"), "ok"),
        ImageCase("png-palette", save(base.convert("P"), "PNG"), "ok"),
        ImageCase("png-palette-transparency", save(base.convert("P"), "PNG", transparency=0), "ok"),
        ImageCase("png-16bit-gray", save(gray16, "PNG"), "ok"),
        ImageCase("png-16bit-rgb", raw_png_16bit_rgb(24, 24), "ok"),
        ImageCase("png-interlaced", raw_png_interlaced(base), "ok"),
        ImageCase("png-icc-profile", save(base, "PNG", icc_profile=srgb), "ok"),
        ImageCase(
            "png-animated-apng",
            save(frames[0], "PNG", save_all=True, append_images=frames[1:]),
            "ok",
        ),
        ImageCase("png-1x1", save(rgb(1, 1), "PNG"), "ok"),
        ImageCase(f"png-1x{MAX_ASPECT_RATIO}-at-aspect-limit", save(rgb(1, 100), "PNG"), "ok"),
        ImageCase(f"png-{MAX_ASPECT_RATIO}x1-at-aspect-limit", save(rgb(100, 1), "PNG"), "ok"),
        ImageCase("png-at-pixel-limit", save(solid, "PNG"), "ok"),
        ImageCase("jpeg-baseline", save(base, "JPEG", quality=90), "ok"),
        ImageCase("jpeg-progressive", save(base, "JPEG", progressive=True), "ok"),
        ImageCase("jpeg-gray", save(base.convert("L"), "JPEG"), "ok"),
        ImageCase("jpeg-cmyk", cmyk, "ok"),
        ImageCase("jpeg-exif-rotated", save(base, "JPEG", exif=exif.tobytes()), "ok"),
        ImageCase("jpeg-subsampling-444", save(base, "JPEG", subsampling=0), "ok"),
        ImageCase(
            "jpeg-mpo-two-frames",
            save(frames[0], "MPO", save_all=True, append_images=frames[1:2]),
            "ok",
        ),
        ImageCase("jpeg-with-trailing-garbage", save(base, "JPEG") + b"\x00garbage" * 100, "ok"),
        ImageCase("webp-lossy", save(base, "WEBP", quality=80), "ok"),
        ImageCase("webp-lossless", save(base, "WEBP", lossless=True), "ok"),
        ImageCase("webp-alpha", save(rgba, "WEBP"), "ok"),
        ImageCase(
            "webp-animated",
            save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
            "ok",
        ),
    ]


def raw_png_16bit_rgb(width: int, height: int) -> bytes:
    pixels = (_noise(width, height).astype(">u2") * 257).tobytes()
    stride = width * 6
    rows = b"".join(b"\x00" + pixels[r * stride : (r + 1) * stride] for r in range(height))
    return raw_png(width, height, bit_depth=16, color_type=2, idat=zlib.compress(rows))


def raw_png_interlaced(image: Image.Image) -> bytes:
    """Adam7-interlaced (Pillow writes only plain PNGs): passes of the 8-bit RGB image."""
    pixels = np.asarray(image)
    passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]
    data = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            data += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 1)
    return (
        PNG_MAGIC
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(data))
        + png_chunk(b"IEND", b"")
    )


def _bombs() -> list[ImageCase]:
    """Files whose headers declare more pixels than allowed: refused from the header (413)."""
    side = int(MAX_IMAGE_PIXELS**0.5)
    just_over = Image.new("RGB", (side, side + 1), (1, 2, 3))
    cases = [
        ImageCase("bomb-png-100000x100000", raw_png(100_000, 100_000), "refused", 413),
        ImageCase("bomb-png-20000x20000", raw_png(20_000, 20_000), "refused", 413),
        ImageCase("bomb-png-1x2147483647", raw_png(1, 2**31 - 1), "refused", 413),
        ImageCase("bomb-png-65535x65535-gray", raw_png(65535, 65535, color_type=0), "refused", 413),
        ImageCase("bomb-png-one-row-over-the-limit", save(just_over, "PNG"), "refused", 413),
        ImageCase("bomb-jpeg-65500x65500", jpeg_sof(65500, 65500), "refused", 413),
        ImageCase("bomb-jpeg-30000x30000", jpeg_sof(30000, 30000), "refused", 413),
        ImageCase("bomb-webp-vp8x-16777216-square", webp_vp8x(2**24, 2**24), "refused", 413),
        ImageCase("bomb-webp-vp8x-40000x40000", webp_vp8x(40000, 40000), "refused", 413),
        ImageCase("bomb-webp-vp8l-16384x16384", webp_vp8l(16384, 16384), "refused", 413),
        ImageCase("bomb-webp-vp8-16383x16383", webp_vp8(16383, 16383), "refused", 413),
    ]
    # A small header hiding a large zlib stream: Pillow inflates only what the header needs.
    zeros = zlib_of_zeros(64 * 2**20)
    cases += [
        ImageCase(
            "zlib-bomb-idat-64mb-for-64x64",
            raw_png(64, 64, color_type=0, idat=zeros),
            "ok",
        ),
        ImageCase(
            "zlib-bomb-ztxt-64mb",
            raw_png(
                64,
                64,
                color_type=0,
                idat=zlib.compress(b"\x00" * 65 * 64),
                before_idat=png_chunk(b"zTXt", b"comment\x00\x00" + zeros),
            ),
            "refused",
        ),
        ImageCase(
            "zlib-bomb-iccp-64mb",
            raw_png(
                64,
                64,
                color_type=0,
                idat=zlib.compress(b"\x00" * 65 * 64),
                before_idat=png_chunk(b"iCCP", b"icc\x00\x00" + zeros),
            ),
            "refused",
        ),
    ]
    return cases


def _shapes() -> list[ImageCase]:
    """Sizes the models cannot take, refused before decoding (400), and empty dimensions."""
    return [
        ImageCase("shape-1x101-beyond-aspect-limit", save(rgb(1, 101), "PNG"), "refused", 400),
        ImageCase("shape-300x1", save(rgb(300, 1), "PNG"), "refused", 400),
        ImageCase("shape-2x2000", save(rgb(2, 2000), "PNG"), "refused", 400),
        ImageCase("shape-png-0x0", raw_png(0, 0), "refused"),
        ImageCase("shape-png-0x16", raw_png(0, 16), "refused"),
        ImageCase("shape-jpeg-0x0", jpeg_sof(0, 0), "refused"),
        ImageCase("shape-jpeg-16x0", jpeg_sof(16, 0), "refused"),
    ]


def _truncated() -> list[ImageCase]:
    cases = []
    png = save(rgb(64, 64, seed=3), "PNG")
    start, end = png_idat_span(png)
    offsets = [0, 1, 4, 8, 12, 16, 24, 32, start - 1, start + 4, start + 8, start + 16]
    # Cuts inside the compressed pixels; a cut in the last CRC or the IEND after it leaves every
    # pixel in place, and Pillow (rightly) decodes those.
    offsets += [start + (end - start) * k // 10 for k in range(1, 10)] + [end - 16]
    cases += [
        ImageCase(f"truncated-png-at-{n}", d, "refused") for n, d in truncations(png, offsets)
    ]
    jpeg = save(rgb(64, 64, seed=4), "JPEG", quality=95)
    sos = jpeg.index(b"\xff\xda")
    offsets = [2, 3, 4, 20, 100, sos - 1, sos + 4, sos + 14]
    offsets += [sos + (len(jpeg) - 2 - sos) * k // 8 for k in range(1, 8)]
    cases += [
        ImageCase(f"truncated-jpeg-at-{n}", d, "refused") for n, d in truncations(jpeg, offsets)
    ]
    progressive = save(rgb(64, 64, seed=5), "JPEG", progressive=True, quality=95)
    offsets = [len(progressive) * k // 6 for k in range(1, 6)]
    cases += [
        ImageCase(f"truncated-progressive-jpeg-at-{n}", d, "refused")
        for n, d in truncations(progressive, offsets)
    ]
    for kind, options in (("lossy", {"quality": 90}), ("lossless", {"lossless": True})):
        webp = save(rgb(64, 64, seed=6), "WEBP", **options)
        offsets = [4, 11, 12, 16, 20, 30] + [len(webp) * k // 6 for k in range(1, 6)]
        offsets.append(len(webp) - 1)
        cases += [
            ImageCase(f"truncated-webp-{kind}-at-{n}", d, "refused")
            for n, d in truncations(webp, offsets)
        ]
    return cases


def _corrupt() -> list[ImageCase]:
    png = save(rgb(32, 32, seed=7), "PNG")
    jpeg = save(rgb(32, 32, seed=8), "JPEG")
    webp = save(rgb(32, 32, seed=9), "WEBP")
    start, end = png_idat_span(png)
    flipped_crc = bytearray(png)
    flipped_crc[29] ^= 0xFF  # inside IHDR's CRC
    garbage_idat = png[: start + 8] + bytes(range(256)) * 4 + png[end - 4 :]
    rng = np.random.default_rng(11)
    return [
        ImageCase("corrupt-png-ihdr-crc", bytes(flipped_crc), "refused"),
        ImageCase("corrupt-png-idat-not-zlib", garbage_idat, "refused"),
        ImageCase("corrupt-png-no-ihdr", PNG_MAGIC + png[33:], "refused"),
        ImageCase("corrupt-png-bit-depth-7", raw_png(8, 8, bit_depth=7), "refused"),
        ImageCase("corrupt-png-color-type-5", raw_png(8, 8, color_type=5), "refused"),
        ImageCase("corrupt-png-magic-then-jpeg", PNG_MAGIC + jpeg, "refused"),
        ImageCase("corrupt-jpeg-magic-then-png", b"\xff\xd8\xff" + png, "refused"),
        ImageCase("corrupt-jpeg-magic-then-noise", b"\xff\xd8\xff" + rng.bytes(2000), "refused"),
        ImageCase("corrupt-png-magic-then-noise", PNG_MAGIC + rng.bytes(2000), "refused"),
        ImageCase("corrupt-webp-header-then-noise", riff(rng.bytes(2000)), "refused"),
        ImageCase(
            "corrupt-webp-riff-size-lies", b"RIFF\xff\xff\xff\xffWEBP" + webp[12:], "refused"
        ),
        ImageCase("corrupt-webp-unknown-chunk", riff(webp_chunk(b"ABCD", b"x" * 40)), "refused"),
        ImageCase("corrupt-jpeg-12-bit-precision", jpeg_sof(16, 16, precision=12), "refused"),
        ImageCase("corrupt-jpeg-scan-zeroed", jpeg[:-200] + b"\x00" * 198 + b"\xff\xd9", "ok"),
    ]


def _not_allowed() -> list[ImageCase]:
    """Real files in formats outside the allow-list (PNG, JPEG, WebP), and things that are not
    images at all: refused by their signature before any decoder runs."""
    small = rgb(16, 16)
    frames = [rgb(16, 16, seed=s) for s in range(2)]
    gif_anim = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100000" '
        b'height="100000"><image href="file:///etc/passwd"/></svg>'
    )
    return [
        ImageCase("format-gif", save(small, "GIF"), "refused"),
        ImageCase("format-gif-animated", gif_anim, "refused"),
        ImageCase("format-tiff", save(small, "TIFF"), "refused"),
        ImageCase("format-tiff-big-endian", b"MM\x00*" + save(small, "TIFF")[4:], "refused"),
        ImageCase("format-bmp", save(small, "BMP"), "refused"),
        ImageCase("format-ico", save(small, "ICO"), "refused"),
        ImageCase("format-ppm", save(small, "PPM"), "refused"),
        ImageCase("format-pcx", save(small, "PCX"), "refused"),
        ImageCase("format-tga", save(small, "TGA"), "refused"),
        ImageCase("format-qoi", save(small, "QOI"), "refused"),
        ImageCase("format-pdf", save(small, "PDF"), "refused"),
        ImageCase("format-svg", svg, "refused"),
        ImageCase("format-heic-signature", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "refused"),
        ImageCase("format-avif-signature", b"\x00\x00\x00\x1cftypavif" + b"\x00" * 64, "refused"),
        ImageCase(
            "format-jpeg2000-signature", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 64, "refused"
        ),
        ImageCase("format-jpegxl-signature", b"\xff\x0a" + b"\x00" * 64, "refused"),
        ImageCase("format-psd-signature", b"8BPS\x00\x01" + b"\x00" * 64, "refused"),
        ImageCase("format-zip", b"PK\x03\x04" + b"\x00" * 64, "refused"),
        ImageCase("format-elf", b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "refused"),
        ImageCase("format-html", b"<html><img src=x onerror=alert(1)></html>", "refused"),
        ImageCase("format-text", b"hello, world", "refused"),
        ImageCase("format-json", b'{"image": "nested"}', "refused"),
        ImageCase("empty-file", b"", "refused"),
        ImageCase("one-zero-byte", b"\x00", "refused"),
        ImageCase("png-magic-only", PNG_MAGIC, "refused"),
        ImageCase("png-magic-partial", PNG_MAGIC[:7], "refused"),
        ImageCase("jpeg-magic-only", b"\xff\xd8\xff", "refused"),
        ImageCase("webp-magic-only", b"RIFF\x00\x00\x00\x00WEBP", "refused"),
        ImageCase("random-bytes-1k", np.random.default_rng(12).bytes(1024), "refused"),
    ]


def image_cases() -> list[ImageCase]:
    cases = _valid_images() + _bombs() + _shapes() + _truncated() + _corrupt() + _not_allowed()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "image case names must be unique"
    return cases


# --- requests -----------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def multipart(
    fields: list[tuple[str, str | bytes, str | None, str | None]], boundary: str = "hostile0b"
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body from (name, value, filename, content type) parts."""
    out = b""
    for name, value, filename, content_type in fields:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        data = value.encode() if isinstance(value, str) else value
        out += head.encode() + b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"content-type": f"multipart/form-data; boundary={boundary}"}


def valid_png() -> bytes:
    return save(rgb(32, 32, seed=21), "PNG")


def edit_body(**changes: Any) -> dict[str, Any]:
    """A valid small edit (the answer is a 32x32 image after 2 steps)."""
    body: dict[str, Any] = {
        "image": b64(valid_png()),
        "instruction": "make it blue",
        "num_inference_steps": 2,
        "width": 32,
        "height": 32,
        "seed": 7,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


def score_body(item_changes: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    png = b64(valid_png())
    item: dict[str, Any] = {"source_image": png, "edited_image": png, "instruction": "score=6"}
    item.update(item_changes or {})
    body: dict[str, Any] = {
        "items": [{k: v for k, v in item.items() if v is not _DROP}],
        "protocol": "single",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()
"""Marks a field to leave out of a body."""


def form_fields(
    image: bytes | None = None, content_type: str | None = "image/png", **changes: str
) -> list[tuple[str, str | bytes, str | None, str | None]]:
    values = {
        "prompt": "make it blue",
        "size": "32x32",
        "num_inference_steps": "2",
        "seed": "7",
    }
    values.update(changes)
    parts: list[tuple[str, str | bytes, str | None, str | None]] = [
        (k, v, None, None) for k, v in values.items() if v != "<drop>"
    ]
    if image is not None:
        parts.insert(0, ("image", image, "image.png", content_type))
    return parts


def _json_request(
    name: str, path: str, body: Any, expect: Expect, status: int | None = None
) -> HostileRequest:
    return HostileRequest(name, path, as_json(body), dict(JSON), expect, status)


def _raw(
    name: str,
    path: str,
    body: bytes,
    expect: Expect = "refused",
    status: int | None = None,
    content_type: str = "application/json",
) -> HostileRequest:
    return HostileRequest(name, path, body, {"content-type": content_type}, expect, status)


def _chunked(size: int) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), ``size`` bytes in 64 KiB pieces."""
    piece = b"x" * 2**16
    for _ in range(size // len(piece)):
        yield piece


def _body_cases(path: str, valid: dict[str, Any]) -> list[HostileRequest]:
    """Hostile bodies that are the same for any JSON route."""
    limit = MAX_BODY_MB * 2**20
    nested = b"[" * 100_000 + b"]" * 100_000
    valid_json = as_json(valid)
    return [
        _raw("body-empty", path, b""),
        _raw("body-not-json", path, b"hello"),
        _raw("body-invalid-utf8", path, b'{"instruction": "\xff\xfe\xfa"}'),
        _raw("body-json-null", path, b"null"),
        _raw("body-json-array", path, b"[]"),
        _raw("body-json-string", path, b'"image"'),
        _raw("body-json-number", path, b"12345"),
        _raw("body-json-huge-int", path, b'{"seed": ' + b"9" * 5000 + b"}"),
        _raw("body-json-truncated", path, valid_json[: len(valid_json) // 2]),
        _raw("body-deeply-nested-arrays", path, nested),
        _raw(
            "body-deeply-nested-in-a-field",
            path,
            b'{"extra": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        ),
        _raw("body-wide-array-1m", path, b'{"extra": [' + b"0," * 999_999 + b"0]}"),
        _raw("body-nan", path, valid_json[:-1] + b', "x": NaN}'),
        _raw("body-text-plain", path, valid_json, content_type="text/plain"),
        _raw(
            "body-form-urlencoded",
            path,
            b"image=abc&instruction=x",
            content_type="application/x-www-form-urlencoded",
        ),
        _raw("body-xml", path, b"<edit><image/></edit>", content_type="application/xml"),
        # A content coding no route decodes: 415 naming it (RFC 9110 15.5.16).
        HostileRequest(
            "body-gzip-encoded",
            path,
            gzip.compress(valid_json),
            {**JSON, "content-encoding": "gzip"},
            "refused",
            415,
        ),
        HostileRequest(
            "body-deflate-encoded",
            path,
            zlib.compress(valid_json),
            {**JSON, "content-encoding": "deflate"},
            "refused",
            415,
        ),
        HostileRequest(
            "body-gzip-declared-not-compressed",
            path,
            valid_json,
            {**JSON, "content-encoding": "gzip, br"},
            "refused",
            415,
        ),
        HostileRequest(
            "body-content-encoding-identity",
            path,
            valid_json,
            {**JSON, "content-encoding": "identity"},
            "ok",
        ),
        _raw("body-over-limit", path, b" " * (limit + 1), status=413),
        HostileRequest(
            "body-over-limit-chunked-without-length",
            path,
            _chunked(limit + 2**16),
            dict(JSON),
            "refused",
            413,
        ),
    ]


def _image_field_cases(
    route: str, wrap: Any, prefix: str, huge_string_ok: bool = False
) -> list[HostileRequest]:
    """The JSON image field: base64 done wrong, data URLs, URLs and paths, wrong types."""
    png = valid_png()
    good = b64(png)
    wrapped = "\n".join(good[i : i + 76] for i in range(0, len(good), 76))
    gif = b64(save(rgb(8, 8), "GIF"))
    cases: list[tuple[str, Any, Expect]] = [
        ("base64-wrapped-at-76", wrapped, "ok"),
        ("base64-with-spaces", " ".join(good[i : i + 4] for i in range(0, len(good), 4)), "ok"),
        ("data-url-png", "data:image/png;base64," + good, "ok"),
        ("data-url-declares-jpeg-holds-png", "data:image/jpeg;base64," + good, "ok"),
        ("data-url-text-plain", "data:text/plain;base64," + good, "refused"),
        ("data-url-not-base64", "data:image/png," + png.decode("latin-1"), "refused"),
        ("data-url-empty", "data:image/png;base64,", "refused"),
        ("data-url-only-prefix", "data:", "refused"),
        ("data-url-gif", "data:image/gif;base64," + gif, "refused"),
        ("base64-missing-padding", good.rstrip("="), "refused" if good.endswith("=") else "ok"),
        ("base64-extra-padding", good + "====", "refused"),
        (
            "base64-urlsafe-alphabet",
            base64.urlsafe_b64encode(png + b"\xfb\xff").decode(),
            "refused",
        ),
        ("base64-invalid-characters", "!!!!not*base64$$$$", "refused"),
        ("base64-of-gif", gif, "refused"),
        ("base64-empty", "", "refused"),
        ("base64-nul-bytes", good[:40] + "\x00" + good[40:], "refused"),
        ("base64-huge-zeros-3mb", "A" * (3 * 2**20), "refused"),
        ("url-http-loopback", "http://127.0.0.1:9/image.png", "refused"),
        ("url-metadata-endpoint", "http://169.254.169.254/latest/meta-data/", "refused"),
        ("url-file-scheme", "file:///etc/passwd", "refused"),
        ("path-absolute", "/etc/passwd", "refused"),
        ("path-traversal", "../../../../etc/passwd", "refused"),
        ("type-number", 12345, "refused"),
        ("type-null", None, "refused"),
        ("type-bool", True, "refused"),
        ("type-list-of-ints", list(png[:64]), "refused"),
        ("type-object", {"url": "http://127.0.0.1/x.png"}, "refused"),
        ("type-list-of-strings", [good], "refused"),
    ]
    return [
        _json_request(f"{prefix}-image-{name}", route, wrap(value), expect)
        for name, value, expect in cases
    ]


def editor_requests() -> list[HostileRequest]:
    """Every image case on both edit routes, then the editor's own hostile payloads."""
    route, form_route = "/v1/edits", "/v1/images/edits"
    requests: list[HostileRequest] = []
    for case in image_cases():
        requests.append(
            _json_request(
                f"edits-{case.name}",
                route,
                edit_body(image=b64(case.data)),
                case.expect,
                case.status,
            )
        )
        body, headers = multipart(form_fields(case.data))
        requests.append(
            HostileRequest(f"form-{case.name}", form_route, body, headers, case.expect, case.status)
        )
    requests += _image_field_cases(route, lambda v: edit_body(image=v), "edits")
    drop = _DROP
    payloads: list[tuple[str, dict[str, Any], Expect]] = [
        ("missing-image", edit_body(image=drop), "refused"),
        ("missing-instruction", edit_body(instruction=drop), "refused"),
        (
            "only-defaults",
            {
                "image": b64(valid_png()),
                "instruction": "x",
                "num_inference_steps": 2,
                "width": 16,
                "height": 16,
            },
            "ok",
        ),
        ("instruction-empty", edit_body(instruction=""), "refused"),
        ("instruction-4000-chars", edit_body(instruction="x" * 4000), "ok"),
        ("instruction-4001-chars", edit_body(instruction="x" * 4001), "refused"),
        ("instruction-3mb", edit_body(instruction="x" * (3 * 2**20)), "refused"),
        ("instruction-number", edit_body(instruction=42), "refused"),
        ("instruction-list", edit_body(instruction=["a", "b"]), "refused"),
        ("instruction-null", edit_body(instruction=None), "refused"),
        ("instruction-control-and-nul", edit_body(instruction="a\x00b\x1b[31mred\u202e"), "ok"),
        ("instruction-lone-surrogate", edit_body(instruction="\ud800 blue"), "refused"),
        ("instruction-emoji-and-rtl", edit_body(instruction="🎨 اجعلها زرقاء 青"), "ok"),
        ("negative-prompt-4001-chars", edit_body(negative_prompt="n" * 4001), "refused"),
        ("steps-0", edit_body(num_inference_steps=0), "refused"),
        ("steps-1", edit_body(num_inference_steps=1), "refused"),
        ("steps-201", edit_body(num_inference_steps=201), "refused"),
        ("steps-negative", edit_body(num_inference_steps=-5), "refused"),
        ("steps-fraction", edit_body(num_inference_steps=2.5), "refused"),
        ("steps-string", edit_body(num_inference_steps="ten"), "refused"),
        ("steps-huge", edit_body(num_inference_steps=10**30), "refused"),
        ("steps-bool", edit_body(num_inference_steps=True), "refused"),
        ("cfg-below-1", edit_body(true_cfg_scale=0.5), "refused"),
        ("cfg-above-20", edit_body(true_cfg_scale=20.5), "refused"),
        ("cfg-1e308", edit_body(true_cfg_scale=1e308), "refused"),
        ("seed-negative", edit_body(seed=-1), "refused"),
        ("seed-2-pow-63", edit_body(seed=2**63), "refused"),
        ("seed-2-pow-64", edit_body(seed=2**64), "refused"),
        ("seed-max", edit_body(seed=2**63 - 1), "ok"),
        ("seed-fraction", edit_body(seed=1.5), "refused"),
        ("size-not-multiple-of-16", edit_body(width=17, height=32), "refused"),
        ("size-zero", edit_body(width=0, height=0), "refused"),
        ("size-8", edit_body(width=8, height=8), "refused"),
        ("size-over-4096", edit_body(width=4112, height=16), "refused"),
        ("size-negative", edit_body(width=-16, height=-16), "refused"),
        ("size-width-only", edit_body(height=drop), "refused"),
        ("size-height-only", edit_body(width=drop), "refused"),
        # pydantic's lax mode reads "32" as 32: in range, so accepted; "32.5" is not an int.
        ("size-numeric-strings", edit_body(width="32", height="32"), "ok"),
        ("size-fractional-strings", edit_body(width="32.5", height="32"), "refused"),
        ("size-smallest-and-thinnest", edit_body(width=16, height=16), "ok"),
        ("output-format-gif", edit_body(output_format="gif"), "refused"),
        ("output-format-upper-case", edit_body(output_format="PNG"), "refused"),
        ("output-format-webp", edit_body(output_format="webp"), "ok"),
        ("output-format-jpeg", edit_body(output_format="jpeg"), "ok"),
        ("compress-level-10", edit_body(compress_level=10), "refused"),
        ("compress-level-negative", edit_body(compress_level=-1), "refused"),
        ("parameters-name-65-chars", edit_body(parameters={"g" * 65: 1.0}), "refused"),
        ("parameters-name-64k", edit_body(parameters={"g" * 65536: 1.0}), "refused"),
        ("parameters-name-empty", edit_body(parameters={"": 1.0}), "refused"),
        ("parameters-value-string", edit_body(parameters={"true_cfg_scale": "x"}), "refused"),
        ("parameters-17", edit_body(parameters={f"p{i}": 1.0 for i in range(17)}), "refused"),
        ("extra-field", edit_body(strength=0.8), "refused"),
        ("extra-field-image-url", edit_body(image_url="http://127.0.0.1:9/x.png"), "refused"),
        ("extra-field-model-path", edit_body(model="/etc/passwd"), "refused"),
        ("extra-field-output-path", edit_body(output_path="/tmp/owned.png"), "refused"),
    ]
    requests += [_json_request(f"edits-{n}", route, b, e) for n, b, e in payloads]
    requests += [
        _raw(
            "edits-json-infinity",
            route,
            as_json(edit_body())[:-1] + b', "true_cfg_scale": Infinity}',
        ),
        _raw("edits-json-nan-cfg", route, as_json(edit_body())[:-1] + b', "true_cfg_scale": NaN}'),
        # Family parameters are finite numbers by short names: NaN passes every range check.
        _raw(
            "edits-parameters-nan",
            route,
            as_json(edit_body())[:-1] + b', "parameters": {"true_cfg_scale": NaN}}',
        ),
        _raw(
            "edits-parameters-infinity",
            route,
            as_json(edit_body())[:-1] + b', "parameters": {"true_cfg_scale": Infinity}}',
        ),
        _raw(
            "edits-parameters-negative-infinity",
            route,
            as_json(edit_body())[:-1] + b', "parameters": {"guidance_scale": -Infinity}}',
        ),
        _raw(
            "edits-json-duplicate-keys-last-wins",
            route,
            as_json(edit_body())[:-1] + b', "num_inference_steps": 3}',
            expect="ok",
        ),
        HostileRequest(
            "edits-multipart-body", route, *multipart(form_fields(valid_png())), "refused"
        ),
    ]
    requests += [_rename(r, "edits-") for r in _body_cases(route, edit_body())]
    requests += _form_cases(form_route)
    requests += path_cases("edits", route, as_json(edit_body()))
    requests += path_cases("form", form_route, multipart(form_fields(valid_png()))[0])
    return _unique(requests)


def _form_cases(route: str) -> list[HostileRequest]:
    png = valid_png()
    gif = save(rgb(8, 8), "GIF")

    def form(
        name: str, fields: list[Any], expect: Expect, status: int | None = None
    ) -> HostileRequest:
        body, headers = multipart(fields)
        return HostileRequest(f"form-{name}", route, body, headers, expect, status)

    cases = [
        form("content-type-text-plain-holds-png", form_fields(png, "text/plain"), "ok"),
        form("content-type-octet-stream", form_fields(png, "application/octet-stream"), "ok"),
        form("content-type-gif-holds-png", form_fields(png, "image/gif"), "ok"),
        form("content-type-missing", form_fields(png, None), "ok"),
        form("content-type-png-holds-gif", form_fields(gif, "image/png"), "refused"),
        form("content-type-svg-holds-svg", form_fields(b"<svg/>", "image/svg+xml"), "refused"),
        form("image-missing", form_fields(None), "refused"),
        form(
            "image-as-plain-field", [("image", b64(png), None, None), *form_fields(None)], "refused"
        ),
        form("image-empty-file", form_fields(b""), "refused"),
        # Several images need a multi-image (Edit Plus) model; the tiny editor is Edit.
        form("two-images", [("image", gif, "a.gif", "image/gif"), *form_fields(png)], "refused"),
        form("prompt-missing", form_fields(png, prompt="<drop>"), "refused"),
        form("prompt-empty", form_fields(png, prompt=""), "refused"),
        form("prompt-4001-chars", form_fields(png, prompt="p" * 4001), "refused"),
        form("size-auto", form_fields(png, size="auto"), "ok"),
        form("size-upper-case-x", form_fields(png, size="32X32"), "ok"),
        form("size-words", form_fields(png, size="big"), "refused"),
        form("size-0x0", form_fields(png, size="0x0"), "refused"),
        form("size-16x", form_fields(png, size="16x"), "refused"),
        form("size-x16", form_fields(png, size="x16"), "refused"),
        form("size-negative", form_fields(png, size="-16x16"), "refused"),
        form("size-exponent", form_fields(png, size="1e3x16"), "refused"),
        form("size-huge-digits", form_fields(png, size="9" * 5000 + "x16"), "refused"),
        form("size-17x17", form_fields(png, size="17x17"), "refused"),
        form("size-4112x16", form_fields(png, size="4112x16"), "refused"),
        form("size-unicode-digits", form_fields(png, size="٣٢x٣٢"), "refused"),
        form("n-2", form_fields(png, n="2"), "ok"),
        form("n-5", form_fields(png, n="5"), "refused"),
        form("n-0", form_fields(png, n="0"), "refused"),
        form("n-word", form_fields(png, n="one"), "refused"),
        form("response-format-url", form_fields(png, response_format="url"), "refused"),
        form("steps-word", form_fields(png, num_inference_steps="many"), "refused"),
        form("steps-1", form_fields(png, num_inference_steps="1"), "refused"),
        form("steps-201", form_fields(png, num_inference_steps="201"), "refused"),
        form("seed-negative", form_fields(png, seed="-1"), "refused"),
        form("seed-2-pow-64", form_fields(png, seed=str(2**64)), "refused"),
        form("cfg-nan", form_fields(png, true_cfg_scale="nan"), "refused"),
        form("cfg-inf", form_fields(png, true_cfg_scale="inf"), "refused"),
        form("output-format-gif", form_fields(png, output_format="gif"), "refused"),
        form("compress-level-10", form_fields(png, compress_level="10"), "refused"),
        form("quality-high-not-honoured", form_fields(png, quality="high"), "refused"),
        form("unknown-field-refused", form_fields(png, guidance="3"), "refused"),
        form("mask-not-png", form_fields(png, mask="x"), "refused"),
        form(
            "filename-path-traversal",
            [("image", png, "../../../etc/passwd", "image/png"), *form_fields(None)],
            "ok",
        ),
        form(
            "filename-64k",  # beyond the multipart parser's header limit: 400
            [("image", png, "f" * 65536 + ".png", "image/png"), *form_fields(None)],
            "refused",
        ),
        form(
            "two-thousand-fields",
            form_fields(png) + [(f"f{i}", "x", None, None) for i in range(2000)],
            "refused",
        ),
    ]
    body, _ = multipart(form_fields(png))
    image_last, _ = multipart([*form_fields(None), ("image", png, "image.png", "image/png")])
    cases += [
        HostileRequest(
            "form-boundary-missing", route, body, {"content-type": "multipart/form-data"}, "refused"
        ),
        HostileRequest(
            "form-boundary-mismatch",
            route,
            body,
            {"content-type": "multipart/form-data; boundary=other"},
            "refused",
        ),
        # The parser tolerates a missing closing delimiter; every field is there, so it is served.
        HostileRequest(
            "form-closing-boundary-missing",
            route,
            body[: -len("--hostile0b--\r\n")],
            {"content-type": "multipart/form-data; boundary=hostile0b"},
            "ok",
        ),
        # The image last, cut short: the parser drops the unfinished part (422, image missing).
        HostileRequest(
            "form-cut-inside-the-image",
            route,
            image_last[: image_last.index(png[-40:])],
            {"content-type": "multipart/form-data; boundary=hostile0b"},
            "refused",
        ),
        HostileRequest("form-json-body", route, as_json(edit_body()), dict(JSON), "refused"),
        HostileRequest(
            "form-gzip-encoded",
            route,
            gzip.compress(body),
            {"content-type": "multipart/form-data; boundary=hostile0b", "content-encoding": "gzip"},
            "refused",
            415,
        ),
        HostileRequest(
            "form-urlencoded",
            route,
            b"prompt=x&size=32x32",
            {"content-type": "application/x-www-form-urlencoded"},
            "refused",
        ),
        HostileRequest(
            "form-over-limit",
            route,
            body + b"x" * (MAX_BODY_MB * 2**20),
            {"content-type": "multipart/form-data; boundary=hostile0b"},
            "refused",
            413,
        ),
    ]
    return cases


def reward_requests() -> list[HostileRequest]:
    """Every image case as an edited image (and a source image), then the judge's payloads."""
    route = "/v1/scores"
    requests: list[HostileRequest] = []
    for case in image_cases():
        requests.append(
            _json_request(
                f"scores-{case.name}",
                route,
                score_body({"edited_image": b64(case.data)}),
                case.expect,
                case.status,
            )
        )
    requests += _image_field_cases(route, lambda v: score_body({"source_image": v}), "scores")
    drop = _DROP
    item = score_body()["items"][0]
    payloads: list[tuple[str, dict[str, Any], Expect]] = [
        ("items-empty", score_body(items=[]), "refused"),
        ("items-65", score_body(items=[item] * 65), "refused"),
        ("items-not-a-list", score_body(items=item), "refused"),
        ("items-null", score_body(items=None), "refused"),
        ("items-list-of-strings", score_body(items=["a"]), "refused"),
        ("items-missing", score_body(items=drop), "refused"),
        ("item-missing-edited-image", score_body({"edited_image": drop}), "refused"),
        ("item-missing-instruction", score_body({"instruction": drop}), "refused"),
        ("item-instruction-empty", score_body({"instruction": ""}), "refused"),
        ("item-instruction-4001-chars", score_body({"instruction": "i" * 4001}), "refused"),
        (
            "item-instruction-lone-surrogate",
            score_body({"instruction": "\udfff score=3"}),
            "refused",
        ),
        ("item-instruction-control-and-nul", score_body({"instruction": "a\x00\x1b[2J"}), "ok"),
        (
            "item-instruction-template-syntax",
            score_body({"instruction": "{{ 7*7 }} {% raw %}"}),
            "ok",
        ),
        ("item-id-512-chars", score_body({"id": "i" * 512}), "ok"),
        ("item-id-513-chars", score_body({"id": "i" * 513}), "refused"),
        ("item-id-number", score_body({"id": 5}), "refused"),
        ("item-category-201-chars", score_body({"category": "c" * 201}), "refused"),
        ("item-category-unknown", score_body({"category": "../../etc"}), "ok"),
        ("item-hints-4001-chars", score_body({"hints": "h" * 4001}), "refused"),
        ("item-extra-field", score_body({"score": 10}), "refused"),
        ("item-extra-field-image-url", score_body({"image_url": "http://127.0.0.1:9/"}), "refused"),
        ("protocol-unknown", score_body(protocol="nope"), "refused"),
        ("protocol-path-traversal", score_body(protocol="../../../../etc/passwd"), "refused"),
        ("protocol-absolute-path", score_body(protocol="/etc/passwd"), "refused"),
        ("protocol-empty", score_body(protocol=""), "refused"),
        ("protocol-201-chars", score_body(protocol="p" * 201), "refused"),
        ("protocol-number", score_body(protocol=3), "refused"),
        ("mode-unknown", score_body(mode="guess"), "refused"),
        ("max-new-tokens-7", score_body(mode="generate", max_new_tokens=7), "refused"),
        ("max-new-tokens-4097", score_body(mode="generate", max_new_tokens=4097), "refused"),
        ("max-new-tokens-string", score_body(max_new_tokens="many"), "refused"),
        ("extra-field", score_body(temperature=2.0), "refused"),
        ("extra-field-model-path", score_body(model="/etc/passwd"), "refused"),
        ("viescore-two-items", score_body(items=[item, item], protocol="viescore"), "ok"),
        ("generate-mode-8-tokens", score_body(mode="generate", max_new_tokens=8), "ok"),
    ]
    requests += [_json_request(f"scores-{n}", route, b, e) for n, b, e in payloads]
    requests += [_rename(r, "scores-") for r in _body_cases(route, score_body())]
    requests += path_cases("scores", route, as_json(score_body()))
    requests += [
        HostileRequest(f"protocols-{name}", f"/v1/protocols/{path}", b"", {}, "refused", 404, "GET")
        for name, path in [
            ("unknown", "nope"),
            ("encoded-traversal", "..%2F..%2F..%2Fetc%2Fpasswd"),
            ("encoded-nul", "single%00"),
            ("long-name", "p" * 4000),
            ("builtin-file-name", "single.yaml"),
            ("list-with-a-trailing-slash", ""),
        ]
    ]
    return _unique(requests)


def path_cases(prefix: str, route: str, body: bytes) -> list[HostileRequest]:
    """A route's path written otherwise, with a Host header of someone else's: a 4xx in the
    envelope (never a redirect, whose Location would be built from that Host)."""
    host = {**JSON, "host": "evil.example"}
    return [
        HostileRequest(f"{prefix}-path-trailing-slash", route + "/", body, host, "refused", 404),
        HostileRequest(f"{prefix}-path-two-trailing-slashes", route + "//", body, host, "refused"),
        HostileRequest(f"{prefix}-path-double-leading-slash", "/" + route, body, host, "refused"),
        HostileRequest(f"{prefix}-path-upper-case", route.upper(), body, host, "refused"),
        HostileRequest(
            f"{prefix}-path-get-with-trailing-slash",
            route + "/",
            b"",
            host,
            "refused",
            method="GET",
        ),
    ]


def _rename(request: HostileRequest, prefix: str) -> HostileRequest:
    return HostileRequest(
        prefix + request.name,
        request.path,
        request.body,
        request.headers,
        request.expect,
        request.status,
        request.method,
    )


def _unique(requests: list[HostileRequest]) -> list[HostileRequest]:
    names = [r.name for r in requests]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"duplicate case names: {sorted(duplicates)}"
    return requests
