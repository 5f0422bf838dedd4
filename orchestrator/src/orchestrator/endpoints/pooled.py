"""The pooled clients: an `EditorClient` or `RewardClient` over an `EndpointSet`, used by the
phases as one client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from orchestrator.clients import (
    EditorClient,
    InvalidResponse,
    RewardClient,
    ServiceCallError,
    ServiceUnreachable,
)
from orchestrator.endpoints.balancing import Endpoint, EndpointSet
from shared_schemas import EditorInfo, ModelInfo, ReadyResponse, RewardInfo

M = TypeVar("M", bound=BaseModel)
# Answers that mean "this endpoint is down, restarting or draining": use another one meanwhile.
_DOWN_STATUSES = frozenset({502, 503})


class EndpointFailed(ServiceUnreachable):
    """One endpoint of several failed; the call is retried on another (no service-wide pause)."""


class PooledClient:
    """What both pooled clients add: every request goes to one endpoint of the set."""

    endpoints: EndpointSet
    service: str

    async def _request(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: BaseModel | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> M:
        endpoint = self.endpoints.pick()
        endpoint.in_flight += 1
        job = method == "POST"
        try:
            result: M = await endpoint.client._request(
                method, path, model, body=body, headers=headers, timeout=timeout
            )
        except ServiceCallError as exc:
            if job:
                endpoint.jobs_failed += 1
            # Down, or answering garbage (a 2xx that is not the shared schema): set aside.
            garbage = isinstance(exc, InvalidResponse)
            if isinstance(exc, ServiceUnreachable) or exc.status in _DOWN_STATUSES or garbage:
                self.endpoints.set_aside(endpoint, exc)
                if self.endpoints.ready():
                    raise self._elsewhere(endpoint, exc.message) from exc
            elif exc.status == 429:  # busy: another endpoint that is not takes the call
                self.endpoints.busy(endpoint, exc.retry_after_s)
                if self.endpoints.others_ready(endpoint):
                    raise self._elsewhere(endpoint, exc.message) from exc
            raise
        finally:
            endpoint.in_flight -= 1
        answered = getattr(result, "model", None)
        if (
            job
            and isinstance(answered, ModelInfo)
            and self.endpoints.changed_model(endpoint, answered)
        ):
            endpoint.jobs_failed += 1
            raise self._elsewhere(endpoint, endpoint.last_error or "serves another model")
        if job:
            endpoint.jobs_ok += 1
        return result

    def _elsewhere(self, endpoint: Endpoint, why: str) -> EndpointFailed:
        return EndpointFailed(
            self.service,
            f"{endpoint.url}: {why} (retrying on another endpoint)",
            error_type="endpoint_failed",
        )

    async def ready(self) -> ReadyResponse:
        """Ready when any endpoint is: probes the set-aside ones first (the readiness gate's
        prober and the phase's start call this)."""
        await self.endpoints.refresh(force=not self.endpoints.ready())
        ready = self.endpoints.ready()
        if ready:
            return ReadyResponse(
                ready=True,
                detail=f"{len(ready)} of {len(self.endpoints.endpoints)} endpoint(s) ready",
                workers_ready=sum(e.weight for e in ready),
                workers_total=sum(e.weight for e in self.endpoints.endpoints.values()),
            )
        first = next(iter(self.endpoints.endpoints.values()), None)
        if first is None:
            raise ServiceUnreachable(self.service, "no endpoint found", error_type="unreachable")
        result: ReadyResponse = await first.client.ready()  # raises the reason it is not ready
        return result

    async def is_ready(self) -> bool:
        try:
            await self.ready()
        except ServiceCallError:
            return False
        return True

    def _infos(self) -> list[Any]:
        infos = [e.info for e in self.endpoints.ready() if e.info is not None]
        if not infos:
            raise ServiceUnreachable(self.service, "no ready endpoint", error_type="unreachable")
        return infos


class PooledEditorClient(PooledClient, EditorClient):
    """An `EditorClient` over several editor endpoints; /v1/info adds their capacities up."""

    def __init__(self, http: httpx.AsyncClient, endpoints: EndpointSet) -> None:
        super().__init__(http, ",".join(endpoints.given))
        self.endpoints = endpoints

    async def info(self) -> EditorInfo:
        await self.endpoints.refresh()
        infos: list[EditorInfo] = self._infos()
        return infos[0].model_copy(
            update={
                "model": self.endpoints.reference,
                "devices": [d for i in infos for d in i.devices],
                "workers": [w for i in infos for w in i.workers],
                "queue_capacity": sum(i.queue_capacity for i in infos),
                "queue_depth": sum(i.queue_depth for i in infos),
                "max_in_flight": sum(i.max_in_flight for i in infos),
                "client_in_flight": _total([i.client_in_flight for i in infos]),
            }
        )


class PooledRewardClient(PooledClient, RewardClient):
    """A `RewardClient` over several judge endpoints; /v1/info adds their capacities up."""

    def __init__(self, http: httpx.AsyncClient, endpoints: EndpointSet) -> None:
        super().__init__(http, ",".join(endpoints.given))
        self.endpoints = endpoints

    async def info(self) -> RewardInfo:
        await self.endpoints.refresh()
        infos: list[RewardInfo] = self._infos()
        protocols = [p for p in infos[0].protocols if all(p in i.protocols for i in infos)]
        return infos[0].model_copy(
            update={
                "model": self.endpoints.reference,
                "devices": [d for i in infos for d in i.devices],
                "max_batch_images": min(i.max_batch_images for i in infos),
                "max_wait_s": max(i.max_wait_s for i in infos),
                "queue_capacity": sum(i.queue_capacity for i in infos),
                "queue_depth": sum(i.queue_depth for i in infos),
                "protocols": protocols,
                "client_in_flight": {
                    p: sum(i.client_in_flight.get(p, 0) for i in infos)
                    for p in protocols
                    if all(p in i.client_in_flight for i in infos)
                },
            }
        )


def endpoint_records(client: EditorClient | RewardClient) -> dict[str, Any] | None:
    """Provenance of a pooled client's endpoints (None for a plain client)."""
    if not isinstance(client, PooledClient):
        return None
    return {"endpoints": client.endpoints.records(), "models": client.endpoints.models()}


async def close_clients(clients: Sequence[EditorClient | RewardClient]) -> None:
    """Stop the background refreshes of pooled clients."""
    for client in clients:
        if isinstance(client, PooledClient):
            await client.endpoints.close()


def _total(values: list[int | None]) -> int | None:
    """The sum over the endpoints, or None if any is too old to say."""
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None
