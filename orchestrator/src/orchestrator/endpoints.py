"""Several endpoints of one service, used as one client: capacity, least-loaded choice, set-aside.

``--editor-url`` and ``--reward-url`` take several URLs (comma-separated). A URL whose host name
resolves to several addresses (Swarm's ``tasks.<service>``, a Kubernetes headless Service) is one
endpoint per address, and the name is resolved again every `EndpointSet.resolve_interval_s`, so
replicas that come and go are used. Each endpoint's weight comes from its /v1/info (the editor's
ready workers, the judge's devices); each call goes to the ready endpoint with the fewest calls in
flight per unit of weight. An endpoint that stops answering, or answers 502/503 (restarting,
draining, not ready), is set aside and probed again later with a growing pause; the call that
failed is retried on another endpoint by the phase's usual retry (`EndpointFailed` does not
pause the whole service the way a failure of its only endpoint does). The phase writes each job's
record once, whichever endpoint answered, so no record is lost or doubled.

Every endpoint must serve the same model (id and revision, what job ids are made of): a set that
mixes them is refused at the start unless ``allow_mixed_revisions``; a replica that turns up later
with another model is not used. `PooledEditorClient` and `PooledRewardClient` are drop-in
`EditorClient`/`RewardClient`s: the phases do not know how many endpoints stand behind them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel

from orchestrator.clients import (
    EditorClient,
    RewardClient,
    ServiceCallError,
    ServiceUnreachable,
)
from orchestrator.jobs import judge_key, model_key

if TYPE_CHECKING:
    from orchestrator.config import RunSettings
from shared_schemas import EditorInfo, ModelInfo, ReadyResponse, RewardInfo

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Resolver = Callable[[str, int], Awaitable[list[str]]]
EndpointState = Literal["pending", "ready", "set_aside", "other_model", "gone"]
# Answers that mean "this endpoint is down, restarting or draining": use another one meanwhile.
_DOWN_STATUSES = frozenset({502, 503})


class MixedRevisions(ServiceCallError):
    """The endpoints of one service serve different models; job ids would not agree."""


class EndpointFailed(ServiceUnreachable):
    """One endpoint of several failed; the call is retried on another (no service-wide pause)."""


def split_urls(value: str | Sequence[str]) -> list[str]:
    """``http://a:8001,http://b:8001`` (or a list) as distinct URLs without a trailing slash."""
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    urls = list(dict.fromkeys(part.strip().rstrip("/") for part in parts if part.strip()))
    if not urls:
        raise ValueError("no service URL given")
    for url in urls:
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
    return urls


def first_url(value: str) -> str:
    """The first of several URLs: where a single call (``editbench edit``/``score``) goes."""
    return split_urls(value)[0]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (TCP), in the resolver's order: one per replica."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return one_family([str(info[4][0]) for info in infos])


def one_family(addresses: Sequence[str]) -> list[str]:
    """The IPv4 addresses if there are any, else the IPv6 ones, without repeats: on a dual-stack
    network each replica has one of each, and must count once."""
    unique = list(dict.fromkeys(addresses))
    v4 = [a for a in unique if ipaddress.ip_address(a).version == 4]
    return v4 or unique


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _with_host(url: str, address: str) -> str:
    parsed = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urlunsplit(parsed._replace(netloc=netloc))


def _default_port(url: str) -> int:
    parsed = urlsplit(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


async def expand(url: str, resolve: Resolver = resolve_addresses) -> list[str]:
    """The endpoints behind one given URL: itself (an address), or one per address its name
    resolves to (none while it resolves to none). An https name with one address stays a
    name: certificates name hosts, not addresses."""
    parsed = urlsplit(url)
    host = parsed.hostname or ""
    if _is_address(host):
        return [url]
    addresses = await resolve(host, _default_port(url))
    if parsed.scheme == "https" and len(addresses) == 1:
        return [url]
    return [_with_host(url, address) for address in addresses]


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
        return min(candidates, key=lambda e: (e.in_flight / e.weight, e.in_flight, e.jobs_ok))

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


class _Pooled:
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
            if isinstance(exc, ServiceUnreachable) or exc.status in _DOWN_STATUSES:
                self.endpoints.set_aside(endpoint, exc)
                if self.endpoints.ready():
                    raise EndpointFailed(
                        self.service,
                        f"{endpoint.url}: {exc.message} (retrying on another endpoint)",
                        error_type="endpoint_failed",
                    ) from exc
            raise
        else:
            if job:
                endpoint.jobs_ok += 1
            return result
        finally:
            endpoint.in_flight -= 1

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


class PooledEditorClient(_Pooled, EditorClient):
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
            }
        )


class PooledRewardClient(_Pooled, RewardClient):
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
            }
        )


def editor_weight(info: EditorInfo) -> int:
    """An editor's capacity: its workers that are ready or busy (all of them while loading)."""
    return sum(1 for w in info.workers if w.state in ("ready", "busy")) or len(info.workers)


def reward_weight(info: RewardInfo) -> int:
    """A judge's capacity: its model replicas, one per device."""
    return len(info.devices)


async def open_editor(
    http: httpx.AsyncClient,
    urls: str | Sequence[str],
    api_key: str | None = None,
    *,
    allow_mixed_revisions: bool = False,
    resolve: Resolver = resolve_addresses,
) -> EditorClient:
    """The editor client of a run: a plain one for one endpoint, a pooled one for several.

    Raises MixedRevisions; an endpoint that cannot be reached yet is tried again later."""
    endpoints = EndpointSet(
        "editor",
        split_urls(urls),
        lambda url: EditorClient(http, url, api_key),
        editor_weight,
        allow_mixed_revisions=allow_mixed_revisions,
        resolve=resolve,
    )
    if not await _several(endpoints):
        return EditorClient(http, endpoints.given[0], api_key)
    await endpoints.start()
    return PooledEditorClient(http, endpoints)


async def open_reward(
    http: httpx.AsyncClient,
    urls: str | Sequence[str],
    api_key: str | None = None,
    *,
    allow_mixed_revisions: bool = False,
    resolve: Resolver = resolve_addresses,
) -> RewardClient:
    """The reward client of a run: a plain one for one endpoint, a pooled one for several."""
    endpoints = EndpointSet(
        "reward",
        split_urls(urls),
        lambda url: RewardClient(http, url, api_key),
        reward_weight,
        allow_mixed_revisions=allow_mixed_revisions,
        key=judge_key,
        resolve=resolve,
    )
    if not await _several(endpoints):
        return RewardClient(http, endpoints.given[0], api_key)
    await endpoints.start()
    return PooledRewardClient(http, endpoints)


async def _several(endpoints: EndpointSet) -> bool:
    """Several URLs, or one name that resolves to several addresses (then kept resolving).

    One URL whose name resolves to one address stays a plain client by name (TLS and virtual
    hosts keep working)."""
    if len(endpoints.given) > 1:
        return True
    try:
        return len(await expand(endpoints.given[0], endpoints.resolve)) > 1
    except OSError:
        return False  # the plain client reports the name that does not resolve


def endpoint_records(client: EditorClient | RewardClient) -> dict[str, Any] | None:
    """Provenance of a pooled client's endpoints (None for a plain client)."""
    if not isinstance(client, _Pooled):
        return None
    return {"endpoints": client.endpoints.records(), "models": client.endpoints.models()}


async def close_clients(clients: Sequence[EditorClient | RewardClient]) -> None:
    """Stop the background refreshes of pooled clients."""
    for client in clients:
        if isinstance(client, _Pooled):
            await client.endpoints.close()


async def open_clients(
    http: httpx.AsyncClient,
    settings: RunSettings,
    *,
    editor_api_key: str | None = None,
    reward_api_key: str | None = None,
    resolve: Resolver = resolve_addresses,
) -> tuple[EditorClient, RewardClient]:
    """The two clients of a run. Only the services the run's phases use are looked up (an
    edit-only run does not care what the judges serve); sharing a GPU needs one of each."""
    mixed = settings.allow_mixed_revisions
    uses_editor = settings.phase != "score" or settings.share_gpu
    uses_reward = settings.phase != "edit" or settings.share_gpu
    editor = (
        await open_editor(
            http, settings.editor_url, editor_api_key, allow_mixed_revisions=mixed, resolve=resolve
        )
        if uses_editor
        else EditorClient(http, split_urls(settings.editor_url)[0], editor_api_key)
    )
    try:
        reward = (
            await open_reward(
                http,
                settings.reward_url,
                reward_api_key,
                allow_mixed_revisions=mixed,
                resolve=resolve,
            )
            if uses_reward
            else RewardClient(http, split_urls(settings.reward_url)[0], reward_api_key)
        )
    except BaseException:
        await close_clients([editor])
        raise
    if settings.share_gpu and (isinstance(editor, _Pooled) or isinstance(reward, _Pooled)):
        await close_clients([editor, reward])
        raise ServiceCallError(
            "editbench",
            "--share-gpu hands one GPU between one editor and one judge: give one URL each",
            error_type="invalid_settings",
        )
    return editor, reward
