"""Ambiguous HTTP/1.1 framing is refused and its connection closed (RFC 9112, section 6.1).

A request with both ``Content-Length`` and ``Transfer-Encoding`` is how request smuggling works
behind a proxy that reads the other header: the two disagree on where this request ends and
the next begins. RFC 9112 6.1 lets a server reject such a message, and requires it to close the
connection after answering. Here it is answered ``400 invalid_request`` in the error envelope
with ``Connection: close`` (uvicorn's h11 then closes the connection once the answer is out), and
never reaches the app.

A body with a content coding (``Content-Encoding: gzip``, ...) is refused the same way, ``415
unsupported_media_type`` naming the coding: no route decodes one, and the compressed bytes would
otherwise be read as JSON or a form and refused in words that do not say why.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service_kit.errors import error_response


def _content_coding(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request body's content coding when it has a body and a coding the services do not
    decode (any but identity), else None."""
    fields = {name.lower(): value for name, value in headers}
    if b"transfer-encoding" not in fields and fields.get(b"content-length", b"0").strip() == b"0":
        return None  # no body: nothing is encoded
    for name, value in fields.items():
        if name == b"content-encoding":
            coding = value.decode("latin-1").strip()
            if coding.lower() not in ("", "identity"):
                return coding
    return None


class AmbiguousFramingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope.get("headers", ())}
            if b"content-length" in names and b"transfer-encoding" in names:
                response = error_response(
                    400,
                    "invalid_request",
                    "the request has both Content-Length and Transfer-Encoding (RFC 9112 6.1): "
                    "send one; this connection is closed",
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
            coding = _content_coding(scope.get("headers", ()))
            if coding is not None:
                # RFC 9110 15.5.16: a content coding the server does not decode is a 415.
                response = error_response(
                    415,
                    "unsupported_media_type",
                    f"Content-Encoding {coding[:40]!r} is not supported: send the body as it is "
                    "(uncompressed)",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
