"""Before the first job of a run: every service the run needs is up, and the protocol exists.

A judge that is down, or a ``--protocol`` it does not know, used to surface only after the whole
edit phase (hours, on a real benchmark). The run now waits for each service it will need (saying
what it waits for, one line per wait) and asks the judge for the protocol first.
"""

from __future__ import annotations

import logging

from orchestrator.clients import EditorClient, RewardClient, ServiceCallError
from orchestrator.phases import PhaseContext
from orchestrator.phases.base import wait_until_ready
from orchestrator.retry import call_with_retry

logger = logging.getLogger(__name__)


async def check_services(
    ctx: PhaseContext,
    *,
    editor: EditorClient | None,
    reward: RewardClient | None,
    protocol: str | None,
) -> None:
    """ServiceNotReady / ServiceCallError now, instead of after the edit phase.

    ``editor``/``reward`` are the services the run will use (None: not needed). Sharing one GPU,
    a service that has released its model counts as up: the hand-over loads it later.
    """
    sharing = ctx.gpu is not None
    for client in (editor, reward):
        if client is not None:
            await wait_until_ready(client, ctx.ready_timeout_s, ctx.progress, released_ok=sharing)
    if reward is None or protocol is None:
        return
    info = await call_with_retry(
        reward.info, policy=ctx.policy, label="reward /v1/info", sleep=ctx.sleep
    )
    if info.protocols and protocol not in info.protocols:
        raise ServiceCallError(
            "reward",
            f"unknown judge protocol {protocol!r}; the service has: {', '.join(info.protocols)}",
            error_type="unknown_protocol",
        )
    logger.info("services ready; judge protocol %s known", protocol)
