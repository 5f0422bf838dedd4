"""Prometheus metrics: one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "HttpMetricsMiddleware", "ServiceMetrics", "generate_latest"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods counted by name; any other (a client may send any token) counts as "other"."""
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "unmatched"


def method_label(method: str) -> str:
    """A label value from a fixed set: made-up methods must not grow /metrics."""
    return method if method in METHODS else OTHER_METHOD


def route_label(scope: Scope) -> str:
    """The matched route's template (the app's own, finite); any other path is "unmatched"."""
    template = getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


class ServiceMetrics:
    """The registry and the HTTP metrics every service has; services add their own to it."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            f"{prefix}_http_requests_total",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["method", "route"],
            buckets=(0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )

    # A service's own metrics, named <prefix>_<name> in its registry.

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(f"{self.prefix}_{name}", doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(f"{self.prefix}_{name}", doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(
            f"{self.prefix}_{name}", doc, labels, buckets=buckets, registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Counts every HTTP response by method and route template: every label value comes from a
    fixed set (never the raw path or method), so requests made up by a client, answered 401 or
    404, cannot grow /metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_label(scope)
            method = method_label(str(scope.get("method", "")))
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_seconds.labels(method, template).observe(time.perf_counter() - start)
