"""The clients of a run, built from its settings: a plain client for one endpoint, a pooled one
for several."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from orchestrator.clients import (
    EditorClient,
    RewardClient,
    ServiceCallError,
)
from orchestrator.endpoints.balancing import EndpointSet
from orchestrator.endpoints.pooled import (
    PooledClient,
    PooledEditorClient,
    PooledRewardClient,
    close_clients,
)
from orchestrator.endpoints.urls import Resolver, expand, resolve_addresses, split_urls
from orchestrator.jobs import judge_key
from orchestrator.openai_editor import OpenAIEditorClient
from shared_schemas import EditorInfo, RewardInfo

if TYPE_CHECKING:
    from orchestrator.config import RunSettings


def editor_weight(info: EditorInfo) -> int:
    """An editor's capacity: its workers that are ready or busy (all of them while loading)."""
    return sum(1 for w in info.workers if w.state in ("ready", "busy")) or len(info.workers)


def reward_weight(info: RewardInfo) -> int:
    """A judge's capacity: its model replicas, one per device."""
    return len(info.devices)


def editor_client(
    http: httpx.AsyncClient,
    url: str,
    api_key: str | None = None,
    api: str = "editbench",
    model: str | None = None,
) -> EditorClient:
    """A client of one editor endpoint: our service, or an OpenAI-compatible images-edit one."""
    if api == "openai":
        return OpenAIEditorClient(http, url, api_key, model)
    return EditorClient(http, url, api_key)


async def open_editor(
    http: httpx.AsyncClient,
    urls: str | Sequence[str],
    api_key: str | None = None,
    *,
    allow_mixed_revisions: bool = False,
    resolve: Resolver = resolve_addresses,
    api: str = "editbench",
    model: str | None = None,
) -> EditorClient:
    """The editor client of a run: a plain one for one endpoint, a pooled one for several.

    Raises MixedRevisions; an endpoint that cannot be reached yet is tried again later."""
    endpoints = EndpointSet(
        "editor",
        split_urls(urls),
        lambda url: editor_client(http, url, api_key, api, model),
        editor_weight,
        allow_mixed_revisions=allow_mixed_revisions,
        resolve=resolve,
    )
    if not await _several(endpoints):
        return editor_client(http, endpoints.given[0], api_key, api, model)
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
            http,
            settings.editor_url,
            editor_api_key,
            allow_mixed_revisions=mixed,
            resolve=resolve,
            api=settings.editor_api,
            model=settings.editor_model,
        )
        if uses_editor
        else editor_client(
            http,
            split_urls(settings.editor_url)[0],
            editor_api_key,
            settings.editor_api,
            settings.editor_model,
        )
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
    if settings.share_gpu and (
        isinstance(editor, PooledClient) or isinstance(reward, PooledClient)
    ):
        await close_clients([editor, reward])
        raise ServiceCallError(
            "editbench",
            "--share-gpu hands one GPU between one editor and one judge: give one URL each",
            error_type="invalid_settings",
        )
    return editor, reward
