"""Each endpoint of a service as this run sees it (health, capacity, model), the least-loaded
choice among the ready ones, and the set-aside of one that fails."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.clients import (
    ServiceCallError,
    ServiceUnreachable,
)
from orchestrator.endpoints.urls import Resolver, expand, resolve_addresses
from orchestrator.jobs import model_key
from shared_schemas import ModelInfo

logger = logging.getLogger(__name__)

EndpointState = Literal["pending", "ready", "set_aside", "other_model", "gone"]


class MixedRevisions(ServiceCallError):
    """The endpoints of one service serve different models; job ids would not agree."""


@dataclass(slots=True)
class Endpoint:
    """One replica of a service, as this run sees it."""

    url: str
    given: str  # the URL it came from (a name that resolves to several addresses, or itself)
    client: Any  # EditorClient | RewardClient of this endpoint alone
    state: EndpointState = "pending"
    weight: int = 1
    in_flight: int = 0
    jobs_ok: int = 0
    jobs_failed: int = 0
    set_aside: int = 0
    pause_s: float = 0.0
    retry_at: float = 0.0
    model: ModelInfo | None = None
    info: Any = None  # EditorInfo | RewardInfo from its latest /v1/info
    last_error: str | None = None
    busy_until: float = 0.0  # it answered 429: others are preferred until then

    def record(self) -> dict[str, Any]:
        """What provenance keeps of this endpoint."""
        return {
            "url": self.url,
            "given": self.given,
            "state": self.state,
            "weight": self.weight,
            "jobs_ok": self.jobs_ok,
            "jobs_failed": self.jobs_failed,
            "set_aside": self.set_aside,
            "model": None if self.model is None else model_key(self.model),
            "last_error": self.last_error,
        }


@dataclass(slots=True)
class EndpointSet:
    """The endpoints of one service; see the module's docstring."""

    service: str
    given: list[str]
    make_client: Callable[[str], Any]
    weigh: Callable[[Any], int]
    allow_mixed_revisions: bool = False
    # What makes two endpoints' models the same configuration (orchestrator.jobs).
    key: Callable[[ModelInfo | None], dict[str, Any]] = model_key
    resolve: Resolver = resolve_addresses
    resolve_interval_s: float = 10.0
    first_pause_s: float = 2.0
    max_pause_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    reference: ModelInfo | None = None
    _next_resolve: float = 0.0
    _refreshing: asyncio.Task[None] | None = None

    # -- choosing -------------------------------------------------------------------------------

    def ready(self) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e.state == "ready"]

    def pick(self) -> Endpoint:
        """The ready endpoint with the least load per unit of capacity (ties: fewest jobs)."""
        self._refresh_soon()
        candidates = self.ready()
        if not candidates:
            down = "; ".join(f"{e.url}: {e.last_error or e.state}" for e in self.endpoints.values())
            raise ServiceUnreachable(
                self.service,
                f"no ready endpoint ({down or 'none found'})",
                error_type="unreachable",
            )
        # One that refused work (429) a moment ago comes after every one that did not.
        now = self.clock()
        return min(
            candidates,
            key=lambda e: (
                e.busy_until > now,
                e.in_flight / e.weight,
                e.in_flight,
                e.jobs_ok,
            ),
        )

    def others_ready(self, endpoint: Endpoint) -> bool:
        return any(e is not endpoint for e in self.ready())

    def busy(self, endpoint: Endpoint, retry_after_s: float | None) -> None:
        """It answered 429: prefer the others until its Retry-After (at least a second)."""
        endpoint.busy_until = self.clock() + max(1.0, min(retry_after_s or 1.0, self.max_pause_s))

    def changed_model(self, endpoint: Endpoint, model: ModelInfo | None) -> bool:
        """Whether an answer's model is not the run's (then the endpoint is not used again):
        answers of another revision are never recorded under this one's job ids."""
        if self.allow_mixed_revisions or self.reference is None:
            return False
        if self.key(model) == self.key(self.reference):
            return False
        endpoint.state = "other_model"
        endpoint.model = model
        endpoint.last_error = f"now serves {_name(model)}, not {_name(self.reference)}"
        logger.warning(
            "%s endpoint %s not used any more: %s", self.service, endpoint.url, endpoint.last_error
        )
        return True

    def set_aside(self, endpoint: Endpoint, exc: ServiceCallError) -> None:
        if endpoint.state != "ready":
            return
        endpoint.state = "set_aside"
        endpoint.set_aside += 1
        endpoint.last_error = exc.message
        endpoint.pause_s = min(self.max_pause_s, max(self.first_pause_s, 2 * endpoint.pause_s))
        endpoint.retry_at = self.clock() + endpoint.pause_s
        logger.warning(
            "%s endpoint %s set aside for %.0f s (%s); %d other(s) ready",
            self.service,
            endpoint.url,
            endpoint.pause_s,
            exc.message,
            len(self.ready()),
        )

    # -- finding and probing ----------------------------------------------------------------------

    def _refresh_soon(self) -> None:
        """Start a refresh in the background when a name is due or a set-aside endpoint is."""
        now = self.clock()
        due = now >= self._next_resolve or any(
            e.state in ("set_aside", "pending") and now >= e.retry_at
            for e in self.endpoints.values()
        )
        if due and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a refresh must never take the run down: the next one tries again
            logger.exception("%s: refreshing the endpoints failed", self.service)

    async def refresh(self, *, force: bool = False) -> None:
        """Resolve names that are due; probe endpoints that are new or due to be tried again."""
        now = self.clock()
        if force or now >= self._next_resolve:
            self._next_resolve = now + self.resolve_interval_s
            await self._resolve()
        due = [
            e
            for e in self.endpoints.values()
            if e.state in ("pending", "set_aside") and (force or self.clock() >= e.retry_at)
        ]
        await asyncio.gather(*(self._probe(e) for e in due))

    async def _resolve(self) -> None:
        for given in self.given:
            try:
                urls = await expand(given, self.resolve)
            except OSError as exc:
                logger.warning(
                    "%s: cannot resolve %s (%s): keeping its endpoints", self.service, given, exc
                )
                continue
            for url in urls:
                if url not in self.endpoints or self.endpoints[url].state == "gone":
                    known = self.endpoints.get(url)
                    if known is not None:
                        known.state, known.retry_at = "pending", 0.0
                    else:
                        self.endpoints[url] = Endpoint(url, given, self.make_client(url))
                    logger.info("%s endpoint %s (from %s)", self.service, url, given)
            for endpoint in self.endpoints.values():
                if (
                    endpoint.given == given
                    and endpoint.url not in urls
                    and endpoint.state != "gone"
                ):
                    logger.info("%s endpoint %s no longer in %s", self.service, endpoint.url, given)
                    endpoint.state = "gone"

    async def _probe(self, endpoint: Endpoint) -> None:
        """/ready, then /v1/info: ready again (with fresh capacity), or set aside a while longer."""
        try:
            await endpoint.client.ready()
            info = await endpoint.client.info()
        except ServiceCallError as exc:
            endpoint.last_error = exc.message
            endpoint.pause_s = min(self.max_pause_s, max(self.first_pause_s, 2 * endpoint.pause_s))
            endpoint.retry_at = self.clock() + endpoint.pause_s
            if endpoint.state == "pending":
                endpoint.state = "set_aside"
            return
        if endpoint.state == "gone":  # resolved away while probing
            return
        self._admit(endpoint, info)

    def _admit(self, endpoint: Endpoint, info: Any) -> None:
        endpoint.info, endpoint.model = info, info.model
        endpoint.weight = max(1, self.weigh(info))
        if self.reference is None:
            self.reference = info.model
        elif self.key(info.model) != self.key(self.reference) and not self.allow_mixed_revisions:
            endpoint.state = "other_model"
            endpoint.last_error = f"serves {_name(info.model)}, not {_name(self.reference)}"
            logger.warning(
                "%s endpoint %s not used: %s", self.service, endpoint.url, endpoint.last_error
            )
            return
        if endpoint.state != "ready":
            logger.info(
                "%s endpoint %s ready (weight %d, %s)",
                self.service,
                endpoint.url,
                endpoint.weight,
                _name(info.model),
            )
        endpoint.state, endpoint.pause_s, endpoint.last_error = "ready", 0.0, None

    async def start(self) -> None:
        """Find and probe every endpoint once; refuse a set that mixes models."""
        await self.refresh(force=True)
        others = [e for e in self.endpoints.values() if e.state == "other_model"]
        if others:
            lines = "; ".join(f"{e.url} {e.last_error}" for e in others)
            raise MixedRevisions(
                self.service,
                f"the endpoints serve different models ({lines}): point the run at one model "
                "revision, or pass --allow-mixed-revisions",
                error_type="mixed_revisions",
            )

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)

    def records(self) -> list[dict[str, Any]]:
        return [e.record() for e in self.endpoints.values()]

    def models(self) -> list[dict[str, Any]]:
        """The distinct models the endpoints served (one unless mixing was allowed)."""
        keys = [self.key(e.model) for e in self.endpoints.values() if e.model is not None]
        distinct = {json.dumps(k, sort_keys=True): k for k in keys}
        return list(distinct.values())


def _name(model: ModelInfo | None) -> str:
    return "no model" if model is None else f"{model.id}@{model.revision}"
