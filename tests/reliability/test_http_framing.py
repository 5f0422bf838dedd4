"""HTTP framing and slow readers (issue 31, class 4), on real service processes over raw
sockets (nothing tidies the bytes up on the way):

- a request with both Content-Length and Transfer-Encoding is answered 400 and its connection
  closed (RFC 9112 6.1): a request smuggled behind it is never answered;
- a client that never reads its answer has its connection aborted at the write deadline, which
  frees the answer; the service keeps serving others meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.services import SERVICES, service_process

HEAD_VARIANTS = [
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "content-length: 0\r\ntransfer-encoding: chunked\r\n",
    "Content-Length: 41\r\nTransfer-Encoding: chunked\r\n",
]


def connect(url: str, *, rcvbuf: int | None = None) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect((parts.hostname or "", parts.port or 80))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("module", SERVICES)
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    module: str, tmp_path: Path
) -> None:
    with service_process(module, tmp_path).running(ready_timeout_s=120) as service:
        for index, head in enumerate(HEAD_VARIANTS):
            smuggled = b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n"
            request = (
                f"POST /v1/info HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode()
                + b"0\r\n\r\n"
                + smuggled
            )
            with connect(service.url) as sock:
                sock.sendall(request)
                answer = read_until_closed(sock)
                sock.settimeout(30)
                assert sock.recv(1) == b""  # closed by the server (a timeout would raise)
            head_bytes, _, body = answer.partition(b"\r\n\r\n")
            assert head_bytes.startswith(b"HTTP/1.1 400"), (index, answer[:200])
            assert b"connection: close" in head_bytes.lower()
            assert json.loads(body.split(b"HTTP/1.1")[0])["error"]["type"] == "invalid_request"
            assert answer.count(b"HTTP/1.1 ") == 1  # the smuggled request got no answer
        # Requests framed one way are served as ever, on a connection kept open.
        with httpx.Client(base_url=service.url) as http:
            assert http.get("/v1/info").status_code == 200
            assert http.post("/v1/info", content=b"").status_code in (200, 405)


POST = b"POST /v1/info HTTP/1.1\r\nHost: x\r\n"
MALFORMED = {
    "method-with-odd-characters": b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-1.1-without-host": b"GET /health HTTP/1.1\r\n\r\n",
    "target-not-ascii": "GET /\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "space-before-colon": b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    "nul-in-a-header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "content-length-not-a-number": POST + b"Content-Length: ab\r\n\r\n",
    "content-length-negative": POST + b"Content-Length: -1\r\n\r\n",
    "two-content-lengths-that-differ": (POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    "transfer-encoding-gzip": POST + b"Transfer-Encoding: gzip\r\n\r\n",
    "chunk-size-not-hex": (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n"),
    "tls-hello-on-the-plain-port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
}


@pytest.mark.parametrize("module", SERVICES)
def test_a_request_http_cannot_parse_gets_a_400_in_the_error_envelope_and_is_closed(
    module: str, tmp_path: Path
) -> None:
    """uvicorn answers what h11 cannot parse with a plain-text 400; ours is the envelope."""
    with service_process(module, tmp_path).running(ready_timeout_s=120) as service:
        wrong = []
        for name, request in MALFORMED.items():
            with connect(service.url) as sock:
                sock.sendall(request)
                answer = read_until_closed(sock)
            head, _, body = answer.partition(b"\r\n\r\n")
            try:
                error = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                wrong.append(f"{name}: not the error envelope: {answer[:200]!r}")
                continue
            if not head.startswith(b"HTTP/1.1 400") or error["type"] != "invalid_request":
                wrong.append(f"{name}: {answer[:200]!r}")
            elif b"connection: close" not in head.lower():
                wrong.append(f"{name}: the connection is not closed: {head!r}")
        assert not wrong, "\n".join(wrong)
        with httpx.Client(base_url=service.url) as http:  # and it serves on
            assert http.get("/v1/info").status_code == 200


def big_png(side: int) -> str:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path = Image.fromarray(pixels)
    import io

    buffer = io.BytesIO()
    path.save(buffer, "PNG", compress_level=0)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("settings", "logged"),
    [
        ({"WRITE_TIMEOUT_S": "2"}, "read none of its answer"),
        # No deadline in reach: the memory bound (8 MiB for all, each answer ~12 MiB) acts.
        ({"WRITE_TIMEOUT_S": "3600", "MAX_UNREAD_ANSWERS_MB": "8"}, "add up to more than"),
    ],
)
def test_clients_that_never_read_their_answers_are_cut_off(
    tmp_path: Path, settings: dict[str, str], logged: str
) -> None:
    service = service_process(
        "editor_service", tmp_path, MAX_IMAGE_PIXELS=str(2048 * 2048), **settings
    )
    body = json.dumps(
        {"image": big_png(1536), "instruction": "mirror", "num_inference_steps": 2, "seed": 1}
    ).encode()
    request = (
        b"POST /v1/edits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with service.running(ready_timeout_s=120):
        readers = [connect(service.url, rcvbuf=4096) for _ in range(3)]
        try:
            for sock in readers:
                sock.sendall(request)
            # Bounded wait for the service to say it gave up on them (it logs each).
            deadline = time.monotonic() + 120
            while service.log().count(logged) < (3 if "none" in logged else 2):
                assert time.monotonic() < deadline, service.log()
                # Meanwhile everyone else is served.
                assert httpx.get(f"{service.url}/health", timeout=30).status_code == 200
                time.sleep(0.5)
            # Cut off: their answers never arrived whole.
            cut = sum(len(read_until_closed(sock)) < len(body) for sock in readers)
            assert cut >= (3 if "none" in logged else 2)
        finally:
            for sock in readers:
                sock.close()
        assert httpx.get(f"{service.url}/ready", timeout=10).status_code == 200
