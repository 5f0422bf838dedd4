"""Fair sharing between teammates: who a request is from, and a round-robin queue over them.

A request's client is the API key it carries (a short digest, never the key) when keys are on;
else the ``X-Editbench-Client`` header the CLI sets (``<user>/<run>``); else "anonymous". The
middleware resolves it once per request into a context variable the editor pool and the judge
batcher read when they queue the request's work, so the work carries it from then on.

``RoundRobin`` keeps one FIFO per client and hands items out one client at a time, in rotation:
a client that floods the queue delays another client's next item by at most one of its own.
Capacity, deadlines and cancels stay the queue owners' business, unchanged.

``ClientLabels`` bounds the /metrics label set: the first ``MAX_CLIENT_LABELS`` clients seen get
their own label value, every later one is counted as "other".
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

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


class RoundRobin(Generic[T]):
    """Per-client FIFOs taken in rotation; ``pop`` serves the next client's oldest item."""

    def __init__(self, client_of: Callable[[T], str]) -> None:
        self._client_of = client_of
        self._queues: collections.OrderedDict[str, collections.deque[T]] = collections.OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[T]:
        for queue in list(self._queues.values()):
            yield from list(queue)

    def __contains__(self, item: object) -> bool:
        return any(item in q for q in self._queues.values())

    def append(self, item: T) -> None:
        self._queues.setdefault(self._client_of(item), collections.deque()).append(item)
        self._size += 1

    def popleft(self) -> T:
        """The oldest item of the client whose turn it is; that client goes to the back."""
        if not self._queues:
            raise IndexError("pop from an empty queue")
        client, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._queues.move_to_end(client)
        else:
            del self._queues[client]
        return item

    def remove(self, item: T) -> None:
        client = self._client_of(item)
        queue = self._queues[client]
        queue.remove(item)
        self._size -= 1
        if not queue:
            del self._queues[client]

    def clear(self) -> None:
        self._queues.clear()
        self._size = 0

    def depths(self) -> dict[str, int]:
        """Items waiting, by client."""
        return {client: len(queue) for client, queue in self._queues.items()}


def round_robin(items: list[T], client_of: Callable[[T], str]) -> list[T]:
    """``items`` (oldest first) interleaved one client at a time, clients in order of their
    oldest item, each client's own order kept: A1 A2 A3 B1 becomes A1 B1 A2 A3."""
    queue = RoundRobin(client_of)
    for item in items:
        queue.append(item)
    return [queue.popleft() for _ in range(len(queue))]


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
