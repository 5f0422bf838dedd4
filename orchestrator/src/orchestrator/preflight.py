"""Before the first job of a run: every service the run needs is up, the protocol exists and
the judge can read scores in the run's mode.

A judge that is down, a ``--protocol`` it does not know, or a ``--mode expected`` asked of a judge
endpoint that returns no log-probabilities used to surface only after the whole edit phase
(hours, on a real benchmark; the last as every score failing with a 400). The run now waits for
each service it will need (saying what it waits for, one line per wait) and asks the judge for the
protocol and its modes first. A benchmark with official statistics judged with a protocol that
cannot give the dimensions they read gets a warning here, before any edit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.benchmarks.statistics import StatisticsName, describe_gaps, protocol_gaps
from orchestrator.clients import EditorClient, RewardClient, ServiceCallError
from orchestrator.phases import PhaseContext
from orchestrator.phases.base import wait_until_ready
from orchestrator.retry import call_with_retry
from orchestrator.wording import counted
from shared_schemas import ProtocolInfo

logger = logging.getLogger(__name__)


async def check_services(
    ctx: PhaseContext,
    *,
    editor: EditorClient | None,
    reward: RewardClient | None,
    protocol: str | None,
    mode: str | None = None,
) -> None:
    """ServiceNotReady / ServiceCallError now, instead of after the edit phase.

    ``editor``/``reward`` are the services the run will use (None: not needed). Sharing one GPU,
    a service that has released its model counts as up: the hand-over loads it later.
    """
    sharing = ctx.gpu is not None
    for client in (editor, reward):
        if client is not None:
            await wait_until_ready(client, ctx.ready_timeout_s, ctx.progress, released_ok=sharing)
    if editor is not None:
        await _note_inputs_over_limit(ctx, editor)
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
    if mode is not None and info.modes and mode not in info.modes:
        offered = " or ".join(f"--mode {m}" for m in info.modes)
        raise ServiceCallError(
            "reward",
            f"the judge at {reward.base_url} cannot read scores in --mode {mode} (it offers "
            f"{offered}: an endpoint that returns no log-probabilities supports generate only). "
            f"Run with {offered}, or use a judge that returns log-probabilities",
            error_type="unsupported_mode",
        )
    statistics = ctx.benchmark.reporting.statistics
    if mode is not None or statistics is not None:
        listed = await call_with_retry(
            reward.protocols, policy=ctx.policy, label="reward /v1/protocols", sleep=ctx.sleep
        )
        spec = next((p for p in listed.protocols if p.name == protocol), None)
        if spec is not None and spec.superseded_by:
            message = (
                f"judge protocol {spec.name!r} is superseded by {spec.superseded_by!r} (kept for "
                f"runs made with it); for a new run use --protocol {spec.superseded_by}"
            )
            logger.warning("%s", message)
            ctx.progress.note(f"warning: {message}")
        if spec is not None and statistics is not None:
            _warn_unofficial(ctx, spec, statistics)
        if mode is not None and spec is not None and spec.modes and mode not in spec.modes:
            raise ServiceCallError(
                "reward",
                f"the judge protocol {protocol!r} reads scores in "
                f"{' or '.join(f'--mode {m}' for m in spec.modes)} only, not --mode {mode}",
                error_type="unsupported_mode",
            )
    logger.info("services ready; judge protocol %s known, mode %s offered", protocol, mode)


async def _note_inputs_over_limit(ctx: PhaseContext, editor: EditorClient) -> None:
    """Say now how many selected items have more input images than the editor's family takes
    (its /v1/info): the edit phase records them as failed without sending them."""
    info = await call_with_retry(
        editor.info, policy=ctx.policy, label="editor /v1/info", sleep=ctx.sleep
    )
    if info.family is None:  # a served endpoint, or no model loaded yet: it answers for itself
        return
    limit = info.family.max_images
    over = sum(1 for item in ctx.items if ctx.benchmark.input_count(item) > limit)
    if over:
        ctx.progress.note(
            f"{counted(over, 'item')} with more input images than {info.family.title} takes "
            f"({limit}): recorded as not edited, without sending them; the run goes on"
        )


def _warn_unofficial(ctx: PhaseContext, spec: ProtocolInfo, statistics: StatisticsName) -> None:
    """A benchmark with official statistics judged with a protocol that cannot give the
    dimensions they read (viescore on KRIS-Bench, say): said now, before any edit, and again in
    the statistics' notes. A warning, not a refusal: other protocols are legitimate to run."""
    items = [(item.category, item.extra) for item in ctx.items]
    message = unofficial_protocol(spec, statistics, items, ctx.benchmark.reporting.metric_names)
    if message is not None:
        logger.warning("%s", message)
        ctx.progress.note(f"warning: {message}")


def unofficial_protocol(
    spec: ProtocolInfo,
    statistics: StatisticsName,
    items: Sequence[tuple[str, Mapping[str, Any]]],
    names: Mapping[str, str],
) -> str | None:
    """Why ``spec`` cannot produce the benchmark's official statistics for these items (their
    category and fields), or None: it gives, per category, every dimension they read."""
    scores = {q.name: [q.name, *q.answers] for q in spec.questions}

    def gives(category: str) -> set[str]:
        entry = spec.question_set(category)
        asked = entry.questions if entry is not None else list(scores)
        return {n for q in asked for n in scores.get(q, [q])} | set(spec.metrics_for(category))

    gaps = protocol_gaps(statistics, items, gives, names)
    return describe_gaps(statistics, spec.name, gaps) if gaps else None
