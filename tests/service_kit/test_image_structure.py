"""Decoding cost is bounded by an image's size, not by tricks in its structure: scans, chunks
and segments are counted from the bytes before any decoder runs; a JPEG larger than needed is
decoded at a reduced DCT scale."""

from __future__ import annotations

import io
import re
import struct
import zlib

import pytest
from PIL import Image

from service_kit.errors import ImageTooComplex
from service_kit.images.decoding import decode_image, fit_within, read_header
from service_kit.images.structure import MAX_JPEG_SCANS, MIN_SEGMENTS, max_segments
from tests.support.images import make_image

LIMIT = 4096 * 4096


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_chunks(count: int, kind: bytes = b"quIt", side: int = 64) -> bytes:
    png = save(make_image(side, side, seed=1), "PNG")
    after_ihdr = 8 + 25
    return png[:after_ihdr] + png_chunk(kind, b"") * count + png[after_ihdr:]


def png_in_small_idats(side: int, idat_bytes: int) -> bytes:
    """A real picture whose image data is split into IDAT chunks of ``idat_bytes``."""
    png = save(make_image(side, side, seed=2), "PNG", compress_level=0)
    start = png.index(b"IDAT") - 4
    end = png.index(b"IEND") - 4
    position, data = start, b""
    while position < end:
        (length,) = struct.unpack_from(">I", png, position)
        data += png[position + 8 : position + 8 + length]
        position += 12 + length
    pieces = [data[i : i + idat_bytes] for i in range(0, len(data), idat_bytes)]
    return png[:start] + b"".join(png_chunk(b"IDAT", p) for p in pieces) + png[end:]


def progressive(side: int = 256) -> bytes:
    return save(make_image(side, side, seed=3), "JPEG", quality=90, progressive=True)


def jpeg_with_extra_scans(count: int, *, empty: bool, side: int = 256) -> bytes:
    """A progressive JPEG with ``count`` more scans: copies of its last scan (with its data),
    or that scan's header alone (no entropy-coded data: empty scans)."""
    data = progressive(side)
    last = [m.start() for m in re.finditer(rb"\xff\xda", data)][-1]
    eoi = data.rindex(b"\xff\xd9")
    (length,) = struct.unpack_from(">H", data, last + 2)
    scan = data[last : last + 2 + length] if empty else data[last:eoi]
    return data[:eoi] + scan * count + data[eoi:]


def jpeg_with_comments(count: int) -> bytes:
    data = save(make_image(32, 32, seed=4), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def webp_with_chunks(count: int) -> bytes:
    data = save(make_image(32, 32, seed=5), "WEBP", lossless=True)
    chunks = data[12:] + b"ABCD\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


@pytest.mark.parametrize(
    ("name", "data", "limit"),
    [
        ("jpeg-3000-empty-scans", jpeg_with_extra_scans(3000, empty=True), "scans"),
        ("jpeg-200-scans-with-data", jpeg_with_extra_scans(200, empty=False), "scans"),
        ("jpeg-65-scans", jpeg_with_extra_scans(MAX_JPEG_SCANS + 1 - 10, empty=True), "scans"),
        ("jpeg-100k-comments", jpeg_with_comments(100_000), "segments"),
        ("png-1m-empty-chunks", png_with_chunks(1_000_000), "chunks"),
        ("png-200k-empty-idats", png_with_chunks(200_000, b"IDAT"), "chunks"),
        ("png-just-over-the-floor", png_with_chunks(MIN_SEGMENTS), "chunks"),
        ("webp-100k-chunks", webp_with_chunks(100_000), "chunks"),
    ],
)
def test_structure_that_makes_decoding_expensive_is_refused_before_decoding(
    name: str, data: bytes, limit: str
) -> None:
    with pytest.raises(ImageTooComplex) as refused:
        decode_image(data, max_pixels=LIMIT, param="items[0].source_image")
    assert refused.value.status_code == 413
    assert refused.value.param == "items[0].source_image"
    assert limit in refused.value.message


def test_a_many_scan_jpeg_over_a_large_picture_is_refused_at_fewer_scans() -> None:
    # Every scan of a progressive JPEG is entropy-decoded over the whole picture.
    large = jpeg_with_extra_scans(8, empty=True, side=4000)  # 16 MP, 18+ scans
    with pytest.raises(ImageTooComplex, match="megapixels in all scans"):
        read_header(large, max_pixels=LIMIT)


@pytest.mark.parametrize(
    ("name", "data", "passes"),
    [
        ("jpeg-baseline", save(make_image(300, 200), "JPEG"), 1),
        ("jpeg-progressive", progressive(), 10),
        ("jpeg-progressive-plus-40", jpeg_with_extra_scans(40, empty=True), 50),
        ("png", save(make_image(300, 200), "PNG"), 1),
        ("png-interlaced", save(make_image(300, 200), "PNG", interlace=1), 1),
        ("png-4k-idat-chunks", png_in_small_idats(512, 4096), 1),
        ("png-1000-private-chunks", png_with_chunks(1000), 1),
        ("webp-lossy", save(make_image(300, 200), "WEBP"), 1),
        ("webp-lossless", save(make_image(300, 200), "WEBP", lossless=True), 1),
    ],
)
def test_ordinary_files_pass_and_say_what_decoding_costs(
    name: str, data: bytes, passes: int
) -> None:
    header = read_header(data, max_pixels=LIMIT)
    assert header.passes == passes
    assert header.decode_cost == pytest.approx(header.width * header.height * passes / 1e6)
    image = decode_image(data, max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert image.size == (header.width, header.height)


def test_the_chunk_cap_grows_with_the_file() -> None:
    assert max_segments(10) == MIN_SEGMENTS
    assert max_segments(64 * 2**20) == 16384


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_keeping_enough_pixels() -> None:
    data = save(make_image(4000, 3000, seed=6), "JPEG", quality=90)
    image = decode_image(data, max_pixels=LIMIT, scale_to_pixels=1024 * 1024)
    # 1/2: the smallest DCT scale (of 1/2, 1/4, 1/8) whose sides are at least those of 1 MiP
    assert image.size == (2000, 1500)
    whole = decode_image(data, max_pixels=LIMIT)
    assert whole.size == (4000, 3000)
    small = decode_image(
        save(make_image(640, 480), "JPEG"), max_pixels=LIMIT, scale_to_pixels=2**20
    )
    assert small.size == (640, 480)  # already small enough: decoded whole


def test_fit_within_keeps_the_aspect_and_leaves_small_images_alone() -> None:
    image = make_image(4000, 2000)
    fitted = fit_within(image, 2**21)
    assert fitted.width * fitted.height <= 2**21
    assert fitted.width == pytest.approx(2 * fitted.height, abs=2)
    small = make_image(100, 50)
    assert fit_within(small, 2**21) is small
