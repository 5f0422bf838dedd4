"""Stalled connections are closed: a deadline on a request's headers and another on its body.

uvicorn times only the idle gap between requests (keep-alive). A client that opens a connection
and sends nothing, or part of its headers, or a body shorter than it declared, holds the
connection (and, for a body, the handler waiting on it) forever; many such clients hold the
server. Here uvicorn's h11 protocol arms a timer for each phase of a request, from the connection
state h11 itself keeps:

- headers: from a new connection, or from the first byte of a further request on a kept-alive
  one, until the request's headers are complete: ``header_timeout_s``;
- body: from the end of the headers until the end of the body: ``body_timeout_s``.

- answer: a client that reads nothing of its answer (the server's send buffer, above its
  high-water mark, does not shrink) for ``write_timeout_s`` has its connection aborted, which
  frees the buffered answer; one that reads, however slowly, gets another period. And answers
  waiting for such readers are bounded in memory: when those of all connections add up to more
  than ``max_unread_bytes``, the connection stalled longest is aborted. So slow readers never
  hold connections and memory forever.

Both are deadlines, not idle timers: a client that trickles a byte now and then is closed too.
On expiry the client gets ``408 request_timeout`` in the error envelope (when no answer has
started) and the connection is closed; a handler waiting for the body sees the client gone.
Other connections are not touched. The idle wait between requests stays uvicorn's keep-alive.

A request h11 cannot parse (a malformed request line or header, a Content-Length that is no
number or two that differ, an unknown Transfer-Encoding, a broken chunk) is answered ``400
invalid_request`` in the error envelope and its connection closed, as uvicorn closes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared_schemas import ErrorInfo, ErrorResponse

logger = logging.getLogger(__name__)

Phase = Literal["headers", "body"]


def _closing_answer(status: str, error_type: str, message: str) -> bytes:
    """A whole answer in the error envelope, for a connection about to be closed."""
    body = ErrorResponse(error=ErrorInfo(type=error_type, message=message)).model_dump_json()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return (head + body).encode("ascii")


def _timeout_answer(phase: Phase, seconds: float) -> bytes:
    return _closing_answer(
        "408 Request Timeout",
        "request_timeout",
        f"the request's {phase} did not arrive within {seconds:g} s",
    )


MALFORMED_REQUEST = _closing_answer(
    "400 Bad Request",
    "invalid_request",
    "malformed HTTP/1.1 request (its request line, a header, its Content-Length or its chunked "
    "body is not valid HTTP); this connection is closed",
)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header and body deadlines of the module docstring.
    Subclassed per server with the two limits (``deadline_protocol``)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    write_timeout_s: float = 60.0
    max_unread_bytes: int = 256 * 2**20
    # Per server class (deadline_protocol makes one each): connections whose reader lags.
    _paused: dict[DeadlineH11Protocol, float] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._unread_bytes = 0

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._unread_bytes = self.transport.get_write_buffer_size()
            self._write_deadline = self.loop.call_later(self.write_timeout_s, self._unread)
        type(self)._paused[self] = self.loop.time()
        self._bound_unread_answers()

    def resume_writing(self) -> None:
        super().resume_writing()
        type(self)._paused.pop(self, None)
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _unread(self) -> None:
        """The write deadline: abort unless the client read something since it was armed."""
        self._write_deadline = None
        if self.transport.is_closing() and self.transport.get_write_buffer_size() == 0:
            return
        pending = self.transport.get_write_buffer_size()
        if pending < self._unread_bytes:  # it reads, slowly: give it another period
            self._unread_bytes = pending
            self._write_deadline = self.loop.call_later(self.write_timeout_s, self._unread)
            return
        self._abort(
            f"it read none of its answer ({pending} bytes waiting) for {self.write_timeout_s:g}s"
        )

    def _bound_unread_answers(self) -> None:
        """The memory bound: while answers waiting for their readers add up to more than
        ``max_unread_bytes``, the connection stalled longest is aborted."""
        paused = type(self)._paused
        total = sum(p.transport.get_write_buffer_size() for p in paused)
        while total > self.max_unread_bytes and paused:
            oldest = min(paused, key=paused.__getitem__)
            total -= oldest.transport.get_write_buffer_size()
            oldest._abort(
                f"answers unread by their clients add up to more than "
                f"{self.max_unread_bytes} bytes; this one waited longest"
            )

    def _abort(self, why: str) -> None:
        type(self)._paused.pop(self, None)
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.warning("aborting the connection of %s: %s", client, why)
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002
        """h11 could not parse the request: answered in the error envelope like every other
        refusal (uvicorn's own answer is plain text), unless the app's answer has started,
        then the connection is closed."""
        self._cancel()
        if not self.transport.is_closing():
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # nothing answered yet
                self.transport.write(MALFORMED_REQUEST)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._retime()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.transport.is_closing():
            self._retime()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._retime()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        type(self)._paused.pop(self, None)
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        super().connection_lost(exc)

    def _wanted(self) -> Phase | None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return "body"
        if state is h11.IDLE:
            buffered, _closed = self.conn.trailing_data
            # A new connection's first request, or bytes of a further one: headers are due.
            if self.cycle is None or buffered:
                return "headers"
        return None

    def _retime(self) -> None:
        wanted = self._wanted()
        if wanted == self._phase:
            return  # a deadline runs from the start of its phase, not from the latest byte
        self._cancel()
        if wanted is not None:
            seconds = self.header_timeout_s if wanted == "headers" else self.body_timeout_s
            self._deadline = self.loop.call_later(seconds, self._expired, wanted, seconds)
            self._phase = wanted

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = None

    def _expired(self, phase: Phase, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.warning("closing the connection of %s: its %s took over %gs", client, phase, seconds)
        # Headers: no request yet, so nothing answered it. Body: only if the app has not
        # started its own answer (it may have refused early, e.g. 401, and the client kept on).
        unanswered = self.cycle is not None and not self.cycle.response_started
        if phase == "headers" or unanswered:
            self.transport.write(_timeout_answer(phase, seconds))
        self.transport.close()


def deadline_protocol(
    header_timeout_s: float,
    body_timeout_s: float,
    write_timeout_s: float = 60.0,
    max_unread_bytes: int = 256 * 2**20,
) -> type[DeadlineH11Protocol]:
    """The protocol class for uvicorn's ``http`` setting, with these deadlines and bound."""
    return type(
        "DeadlineH11Protocol",
        (DeadlineH11Protocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "write_timeout_s": write_timeout_s,
            "max_unread_bytes": max_unread_bytes,
            "_paused": {},
        },
    )
