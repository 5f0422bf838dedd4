"""Who a request is from, for fair sharing between teammates.

A request's client is the API key it carries (a short digest, never the key) when keys are on;
else the ``X-Editbench-Client`` header the CLI sets (``<user>/<run>``); else "anonymous". The
middleware resolves it once per request into a context variable the admission queue
(service_kit.replicas.admission) reads when it admits and queues the request's work, so the work
carries it from then on.

``ClientLabels`` bounds the /metrics label set: the first ``MAX_CLIENT_LABELS`` clients seen get
their own label value, every later one is counted as "other".
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
from collections.abc import Iterator
from typing import TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from service_kit.http.auth import ApiKeys

CLIENT_HEADER = "X-Editbench-Client"
ANONYMOUS = "anonymous"
OTHER = "other"
MAX_CLIENT_LABELS = 8
_MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._@/:+-]")

_client: contextvars.ContextVar[str] = contextvars.ContextVar("editbench_client", default=ANONYMOUS)

T = TypeVar("T")


def current_client() -> str:
    """The client of the request being served ("anonymous" outside one)."""
    return _client.get()


@contextlib.contextmanager
def client_context(client: str) -> Iterator[None]:
    """Work queued inside this block is ``client``'s (what the middleware does per request)."""
    token = _client.set(client)
    try:
        yield
    finally:
        _client.reset(token)


def key_identity(token: str) -> str:
    """A short, stable name for an API key that does not reveal it."""
    return "key-" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def header_identity(value: str) -> str:
    """The header's value, cleaned to a short, printable name ("anonymous" if nothing is left)."""
    cleaned = _UNSAFE.sub("_", value.strip())[:_MAX_NAME]
    return cleaned or ANONYMOUS


def resolve_client(headers: dict[bytes, bytes], keys: ApiKeys) -> str:
    if keys.enabled:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip() and keys.accepts(token.strip()):
            return key_identity(token.strip())
    value = headers.get(CLIENT_HEADER.lower().encode(), b"").decode("latin-1")
    return header_identity(value) if value else ANONYMOUS


class ClientIdentityMiddleware:
    """Sets ``current_client()`` for the rest of the request (inside the API-key check)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        with client_context(resolve_client(headers, self.keys)):
            await self.app(scope, receive, send)


class ClientLabels:
    """Label values for per-client metrics: at most ``limit`` clients by name, the rest "other"."""

    def __init__(self, limit: int = MAX_CLIENT_LABELS) -> None:
        self.limit = limit
        self._named: dict[str, str] = {}

    def __call__(self, client: str) -> str:
        label = self._named.get(client)
        if label is None:
            if len(self._named) >= self.limit:
                return OTHER
            label = self._named[client] = str(client)
        return label

    def depths(self, depths: dict[str, int]) -> dict[str, int]:
        """Depth by label, every label seen so far included (at 0 when its queue is empty)."""
        out = dict.fromkeys(self._named.values(), 0)
        if len(self._named) >= self.limit:
            out[OTHER] = 0
        for client, depth in depths.items():
            label = self(client)
            out[label] = out.get(label, 0) + depth
        return out
