"""Stalled connections are closed: raw sockets against both services under real uvicorn.

A connection that sends nothing, part of its headers, headers a byte at a time, or less body than
it declared is answered 408 (when nothing else was answered) and closed after the documented
deadline (``*_HEADER_TIMEOUT_S``, ``*_BODY_TIMEOUT_S``); meanwhile other clients are served, and
a kept-alive connection idle past the header deadline is still served (idle time is keep-alive's).
Before, each of these held its connection forever.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.services import SERVICES, service_process
from tests.support.servers import ServiceProcess

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
WAIT_S = 60  # how long a test waits for the close: a bound for a hang, not a timing claim
TRICKLE_BOUND_S = HEADER_TIMEOUT_S + 14  # the trickle gives up here: 1000 s if never closed


@pytest.fixture(scope="module", params=SERVICES)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    module: str = request.param
    settings = {"HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    process = service_process(module, tmp_path_factory.mktemp(module), **settings)
    with process.running(ready_timeout_s=120):
        yield process


def connect(service: ServiceProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; socket.timeout if it never does."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def assert_timed_out(answer: bytes, phase: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["type"] == "request_timeout"
    assert phase in error["message"]


def served(service: ServiceProcess) -> bool:
    response = httpx.get(f"{service.url}/health", timeout=WAIT_S)
    return response.status_code == 200


def test_a_connection_that_sends_nothing_is_closed(service: ServiceProcess) -> None:
    with connect(service) as sock:
        assert_timed_out(read_until_closed(sock), "headers")


def test_unfinished_headers_are_answered_408_and_closed_while_others_are_served(
    service: ServiceProcess,
) -> None:
    stalled = [connect(service) for _ in range(8)]
    try:
        for i, sock in enumerate(stalled):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * i)
        assert served(service)  # the stalled ones hold nothing another client needs
        for sock in stalled:
            assert_timed_out(read_until_closed(sock), "headers")
    finally:
        for sock in stalled:
            sock.close()


def test_headers_trickled_a_byte_at_a_time_are_closed_at_the_deadline(
    service: ServiceProcess,
) -> None:
    """The header deadline runs from the connection's start, not from its latest byte: a byte
    every 0.1 s gets the 408 once HEADER_TIMEOUT_S has passed (an idle timer never would)."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    sent = 0
    with connect(service) as sock:
        began = time.monotonic()
        # Bounded in bytes and time; stops sending as soon as the server has answered, so the
        # answer is read whole (no write racing the server's close).
        while sent < len(request) and time.monotonic() - began < TRICKLE_BOUND_S:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                break
            sock.sendall(request[sent : sent + 1])
            sent += 1
        answered = time.monotonic() - began
        answer = read_until_closed(sock)
    assert_timed_out(answer, "headers")
    assert sent < len(request)
    # At the deadline: not before it, and long before the trickle would have ended (a protocol
    # deadline bounded generously, not a speed target).
    assert HEADER_TIMEOUT_S <= answered < TRICKLE_BOUND_S


def test_a_body_shorter_than_declared_is_answered_408_and_closed(
    service: ServiceProcess,
) -> None:
    route = "/v1/scores" if "reward" in service.module else "/v1/edits"
    head = (
        f"POST {route} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        "content-length: 1000\r\n\r\n"
    ).encode()
    with connect(service) as sock:
        sock.sendall(head + b'{"items": [')
        assert served(service)
        assert_timed_out(read_until_closed(sock), "body")
    assert served(service)


def test_a_kept_alive_connection_idle_past_the_header_deadline_is_still_served(
    service: ServiceProcess,
) -> None:
    with httpx.Client(base_url=service.url, timeout=WAIT_S) as http:
        first = http.get("/health")
        time.sleep(HEADER_TIMEOUT_S * 2.5)  # idle between requests: keep-alive's time, not ours
        second = http.get("/health")
        # The same connection: a closed one would show as a fresh connection or an error.
        assert first.status_code == second.status_code == 200
        assert first.extensions["network_stream"] is second.extensions["network_stream"]


def test_a_complete_request_is_served_on_a_raw_socket(service: ServiceProcess) -> None:
    with connect(service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_body_still_trickling_after_an_early_answer_gets_no_second_answer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # With API keys, a request without one is answered 401 before its body is read; a client
    # that goes on not sending its body is closed at the body deadline, with that one answer.
    settings = {
        "HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "API_KEYS": "key-5e1f",
    }
    process = service_process("reward_service", tmp_path_factory.mktemp("keyed"), **settings)
    head = (
        b"POST /v1/scores HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n"
    )
    with process.running(ready_timeout_s=120), connect(process) as sock:
        sock.sendall(head + b'{"items"')
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert answer.count(b"HTTP/1.1 ") == 1
