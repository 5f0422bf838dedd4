"""Ambiguous HTTP/1.1 framing is refused and its connection closed (RFC 9112, section 6.1).

A request with both ``Content-Length`` and ``Transfer-Encoding`` is how request smuggling works
behind a proxy that reads the other header: the two disagree on where this request ends and
the next begins. RFC 9112 6.1 lets a server reject such a message, and requires it to close the
connection after answering. Here it is answered ``400 invalid_request`` in the error envelope
with ``Connection: close`` (uvicorn's h11 then closes the connection once the answer is out), and
never reaches the app.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service_kit.errors import error_response


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
        await self.app(scope, receive, send)
