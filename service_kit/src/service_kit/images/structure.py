"""What a file's structure will cost to decode, read from its bytes before any decoder runs.

A decoder's work grows with the picture and with the file's structure: a 155 KiB progressive
JPEG with thousands of empty scans takes seconds, and so does a 64x64 PNG with a million empty
chunks, although neither has many pixels or bytes. Here the structure is walked with plain byte
scans (C-speed searches; every loop stops at its cap) and anything beyond these caps is refused:

- JPEG: at most ``MAX_JPEG_SCANS`` scans (libjpeg's progressive script has 10, jpegtran's and
  mozjpeg's stay well under 64) and at most ``MAX_SCAN_MEGAPIXELS`` megapixels summed over all
  scans (each scan of a progressive image is entropy-decoded over the whole picture, even at a
  reduced decoding scale), and at most ``max_segments`` marker segments;
- PNG and WebP: at most ``max_segments`` chunks, where ``max_segments`` grows with the file's
  size (one per ``BYTES_PER_SEGMENT``, at least ``MIN_SEGMENTS``): a large image may be stored
  in many chunks, a small one may not.
"""

from __future__ import annotations

import re
import struct

from service_kit.errors import ImageTooComplex, InvalidImage
from shared_schemas import ImageFormat

MAX_JPEG_SCANS = 64
MAX_SCAN_MEGAPIXELS = 256.0  # 15 scans of a 16.8 MP picture (libjpeg's script has 10)
MIN_SEGMENTS = 1024
BYTES_PER_SEGMENT = 4096

# In entropy-coded JPEG data a marker is 0xFF followed by anything but 0x00 (a stuffed 0xFF),
# a restart marker (D0-D7) or fill bytes (0xFF).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def max_segments(size: int) -> int:
    return max(MIN_SEGMENTS, size // BYTES_PER_SEGMENT)


def check_structure(data: bytes, fmt: ImageFormat, *, param: str) -> int:
    """How many passes over the picture decoding ``data`` takes (a JPEG's scans; 1 for PNG and
    WebP). Raises ImageTooComplex (413) naming the limit when that, or the number of segments,
    is more than the file's size and pixel count allow; InvalidImage (400) when the structure
    is broken."""
    if fmt == "jpeg":
        return _check_jpeg(data, param)
    if fmt == "png":
        _check_png(data, param)
    else:
        _check_webp(data, param)
    return 1


def _too_complex(param: str, what: str) -> ImageTooComplex:
    return ImageTooComplex(f"{param} {what}", param=param)


def _check_jpeg(data: bytes, param: str) -> int:
    segments_cap = max_segments(len(data))
    scans_cap = MAX_JPEG_SCANS  # until the frame header says how large the picture is
    megapixels = 0.0
    position, segments, scans = 2, 0, 0  # after SOI
    end = len(data)
    while position + 1 < end:
        if data[position] != 0xFF:
            raise InvalidImage(f"{param} is not a well-formed JPEG", param=param)
        marker = data[position + 1]
        position += 2
        if marker == 0xFF:  # a fill byte before a marker
            position -= 1
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            continue
        segments += 1
        if segments > segments_cap:
            raise _too_complex(
                param, f"has more than {segments_cap} JPEG segments for its {end} bytes"
            )
        if position + 2 > end:
            break  # truncated: the decoder says so
        (length,) = struct.unpack_from(">H", data, position)
        if marker in _SOF and position + 7 <= end:
            height, width = struct.unpack_from(">HH", data, position + 3)
            megapixels = width * height / 1e6
            scans_cap = min(
                MAX_JPEG_SCANS, max(1, int(MAX_SCAN_MEGAPIXELS / max(megapixels, 1e-6)))
            )
        position += length
        if marker == _SOS:
            scans += 1
            if scans > scans_cap:
                raise _too_complex(
                    param,
                    f"has more than {scans_cap} JPEG scans: at most {MAX_JPEG_SCANS}, and "
                    f"{MAX_SCAN_MEGAPIXELS:g} megapixels in all scans ({megapixels:.1f} MP each)",
                )
            found = _NEXT_MARKER.search(data, position)
            position = found.start() if found else end
    return max(scans, 1)


def _check_png(data: bytes, param: str) -> None:
    cap = max_segments(len(data))
    position, chunks, end = 8, 0, len(data)
    while position + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, position)
        chunks += 1
        if chunks > cap:
            raise _too_complex(param, f"has more than {cap} PNG chunks for its {end} bytes")
        if kind == b"IEND":
            return
        position += 12 + length


def _check_webp(data: bytes, param: str) -> None:
    cap = max_segments(len(data))
    position, chunks, end = 12, 0, len(data)
    while position + 8 <= end:
        (length,) = struct.unpack_from("<I", data, position + 4)
        chunks += 1
        if chunks > cap:
            raise _too_complex(param, f"has more than {cap} WebP chunks for its {end} bytes")
        position += 8 + length + (length & 1)
