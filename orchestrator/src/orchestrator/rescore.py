"""``editbench rescore``: an existing run's edits before another judge (or protocol, or mode).

The run's own scores stay in scores.jsonl; the new judge's go to rescores.jsonl, each record
naming its judge (model and revision, protocol and its hash, mode: see orchestrator.judges), so
any number of judges sit side by side. Job ids name the judge too, so a rescore resumes like a
run (finished jobs are skipped) and rescoring with the run's own judge sends nothing. The
benchmark is read again for the source images (the run folder keeps the edits); provenance.json
lists every rescore, and the new judge's report is written as report-<judge>.html.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from orchestrator.benchmarks import Benchmark, BenchmarkError, Item, load_benchmark
from orchestrator.clients import Timeouts, client_name, make_http_client
from orchestrator.endpoints.opening import open_reward
from orchestrator.endpoints.pooled import close_clients
from orchestrator.judges import JudgeId, judges_in
from orchestrator.phases import PhaseContext, PhaseCounts, ScorePhase, now_iso
from orchestrator.preflight import check_services
from orchestrator.progress import PhaseProgress
from orchestrator.provenance import JudgeRecord, RescoreEntry, ServiceRecord
from orchestrator.records import Summary
from orchestrator.report import ReportPaths, write_report
from orchestrator.retry import RetryPolicy
from orchestrator.runner import read_saved_identity
from orchestrator.store import RunStore
from shared_schemas import ScoreMode

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RescoreRequest:
    run: Path
    reward_url: str
    protocol: str | None = None  # None: the run's own
    mode: ScoreMode | None = None
    max_new_tokens: int | None = None
    items_per_request: int = 4
    concurrency: int | None = None
    reward_api_key: str | None = None
    retry_failed: bool = False
    ready_timeout_s: float = 600.0
    request_timeout_s: float = 900.0


@dataclass(slots=True)
class RescoreOutcome:
    judge: JudgeId | None  # None: nothing scored
    counts: PhaseCounts
    report: ReportPaths | None
    summary: Summary | None


def _items(benchmark: Benchmark, store: RunStore) -> list[Item]:
    """The run's planned items, in plan order, from the benchmark (for the source images)."""
    planned = [row.id for row in store.read_plan()]
    by_id = {item.id: item for item in benchmark.items}
    missing = [i for i in planned if i not in by_id]
    if missing:
        raise BenchmarkError(
            f"{len(missing)} planned item(s) are not in the benchmark any more "
            f"(first: {missing[0]!r}): rescore needs the benchmark the run was made with"
        )
    return [by_id[i] for i in planned]


async def rescore_run(
    request: RescoreRequest,
    progress: PhaseProgress,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RescoreOutcome:
    store = RunStore(request.run)
    saved = read_saved_identity(request.run)
    if saved is None:
        raise BenchmarkError(f"{request.run} is not a run folder (no run.json)")
    if not saved.get("benchmark"):
        raise BenchmarkError(f"{request.run}/run.json names no benchmark")
    protocol = request.protocol or saved.get("protocol") or "viescore"
    mode: ScoreMode = request.mode or saved.get("mode") or "expected"
    max_new_tokens = request.max_new_tokens or int(saved.get("max_new_tokens") or 512)
    benchmark = await asyncio.to_thread(
        load_benchmark,
        str(saved["benchmark"]),
        split=saved.get("split"),
        allow_outside_paths=bool(saved.get("allow_outside_paths")),
    )
    policy = policy or RetryPolicy()
    extra: dict[str, Any] = {"transport": transport} if transport is not None else {}
    with store:
        items = _items(benchmark, store)
        provenance = store.read_provenance()
        entry = RescoreEntry(
            started_at=now_iso(),
            reward_url=request.reward_url,
            protocol=protocol,
            mode=mode,
            max_new_tokens=max_new_tokens,
        )
        provenance.rescores.append(entry)
        ctx = PhaseContext(
            benchmark=benchmark,
            items=items,
            store=store,
            progress=progress,
            policy=policy,
            retry_failed=request.retry_failed,
            ready_timeout_s=request.ready_timeout_s,
            sleep=sleep,
        )
        edited_dir = saved.get("edited_dir")
        counts = PhaseCounts()
        async with make_http_client(
            Timeouts(read_s=request.request_timeout_s),
            client=client_name(Path(request.run).name),
            **extra,
        ) as http:
            reward = await open_reward(http, request.reward_url, request.reward_api_key)
            try:
                await check_services(ctx, editor=None, reward=reward, protocol=protocol)
                phase = ScorePhase(
                    ctx,
                    reward,
                    protocol=protocol,
                    mode=mode,
                    max_new_tokens=max_new_tokens,
                    items_per_request=request.items_per_request,
                    concurrency=request.concurrency,
                    edited_dir=Path(edited_dir) if edited_dir else None,
                    allow_outside_paths=bool(saved.get("allow_outside_paths")),
                    log=store.rescores,
                )
                info, protocol_info = await phase.prepare()
                entry.reward = ServiceRecord.model_validate(info.model_dump(mode="json"))
                entry.protocol_info = protocol_info
                if phase.protocol_definition is not None:
                    entry.protocol_definition = phase.protocol_definition.model_dump(mode="json")
                store.write_provenance(provenance)
                started = time.monotonic()
                try:
                    counts = await phase.run()
                finally:
                    entry.score_wall_s = round(time.monotonic() - started, 3)
            finally:
                await close_clients([reward])
                entry.finished_at = now_iso()
                entry.counts = counts
                store.write_provenance(provenance)
        judge = _judge_of_this_rescore(store, protocol, mode, entry)
        entry.judge = None if judge is None else JudgeRecord(**judge.describe())
        store.write_provenance(provenance)
        report = summary = None
        if judge is not None:
            report, summary = await asyncio.to_thread(write_report, store, provenance, judge=judge)
    return RescoreOutcome(judge, counts, report, summary)


def _judge_of_this_rescore(
    store: RunStore, protocol: str, mode: str, entry: RescoreEntry
) -> JudgeId | None:
    """The judge this rescore's records name (the model the service reported)."""
    model = None if entry.reward is None else entry.reward.model
    model_name = None if model is None else model.name
    records = [*store.scores.read(), *store.rescores.read()]
    for judge in reversed(judges_in(records)):
        if (judge.protocol, judge.mode) == (protocol, mode) and (
            model_name is None or judge.model == model_name
        ):
            return judge
    return None
