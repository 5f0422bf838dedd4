"""``editbench run`` without the CLI: load, select, plan, edit, score, report.

`run_benchmark` is what the CLI and the tests call. Everything it needs comes in as arguments
(settings, a progress view, optionally an httpx transport and a sleep function), so a test can
drive a whole run against scripted services without touching the environment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from orchestrator.benchmarks import (
    Benchmark,
    BenchmarkError,
    is_hub_id,
    load_benchmark,
    select_items,
)
from orchestrator.clients import (
    EditorClient,
    RewardClient,
    Timeouts,
    client_name,
    make_http_client,
)
from orchestrator.config import RunSettings
from orchestrator.endpoints.opening import open_clients
from orchestrator.endpoints.pooled import close_clients, endpoint_records
from orchestrator.handover import GpuSharing, Handover
from orchestrator.judges import run_judges, select_judge
from orchestrator.phases import EditPhase, PhaseContext, PhaseCounts, ScorePhase, now_iso
from orchestrator.preflight import check_services
from orchestrator.progress import PhaseProgress
from orchestrator.provenance import (
    BenchmarkInfo,
    HandoverRecord,
    Invocation,
    Provenance,
    ServiceRecord,
    SettingsRecord,
    software,
)
from orchestrator.records import PlanRow, RunFile, Summary
from orchestrator.report import ReportPaths, write_report
from orchestrator.retry import RetryPolicy
from orchestrator.store import RunStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RunOutcome:
    out: Path
    items: int
    edit: PhaseCounts | None
    score: PhaseCounts | None
    report: ReportPaths | None
    summary: Summary | None
    handovers: list[Handover] = field(default_factory=list)  # GPU hand-overs of this invocation


def default_out(benchmark: str | None) -> Path:
    if benchmark and is_hub_id(benchmark):
        benchmark = benchmark.split("@")[0]  # owner/name: runs/name-<time>
    name = Path(benchmark).stem if benchmark and benchmark != "sample" else (benchmark or "run")
    if name == "manifest" and benchmark:
        name = Path(benchmark).parent.name
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# Saved in run.json for a resume, never an API key (those come from the environment or flags).
SAVED_SERVICES = ("editor_url", "reward_url", "share_gpu", "allow_mixed_revisions")


def read_saved_identity(out: Path) -> dict[str, Any] | None:
    """The settings saved in a run folder (identity, latest selection and services), or None
    if new. Flags, environment and config file override all but the identity."""
    saved = RunStore(out).read_run_file()
    if saved is None:
        return None
    services = {k: v for k, v in saved.services.items() if k in SAVED_SERVICES}
    return {**saved.selection, **services, **saved.identity}


def _selection(settings: RunSettings, benchmark: Benchmark) -> list[Any]:
    return select_items(
        benchmark.items,
        categories=settings.categories,
        languages=settings.languages,
        limit=settings.limit,
        limit_per_category=settings.limit_per_category,
    )


def _plan_rows(items: list[Any]) -> list[PlanRow]:
    return [
        PlanRow(
            id=item.id,
            category=item.category,
            instruction=item.instruction,
            language=item.language,
            hints=item.hints,
            source=item.source,
            extra=item.extra,
        )
        for item in items
    ]


async def run_benchmark(
    settings: RunSettings,
    progress: PhaseProgress,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunOutcome:
    """Run the phases ``settings.phase`` asks for into ``settings.out``, then write the report."""
    if settings.benchmark is None:
        raise BenchmarkError("no benchmark given (--benchmark PATH, or 'sample')")
    out = settings.out or default_out(settings.benchmark)
    policy = policy or RetryPolicy(job_deadline_s=settings.job_deadline_s)
    benchmark = await asyncio.to_thread(
        load_benchmark,
        settings.benchmark,
        split=settings.split,
        allow_outside_paths=settings.allow_outside_paths,
    )
    items = _selection(settings, benchmark)
    if not items:
        raise BenchmarkError("no items selected: check --categories, --language and --limit")

    with RunStore(out) as store:
        previous = store.read_run_file()
        store.write_run_file(
            RunFile(
                identity=settings.identity() if previous is None else previous.identity,
                selection=settings.selection(),
                # Where the services were: a printed `--resume --out DIR` finds them again.
                services={key: getattr(settings, key) for key in SAVED_SERVICES},
                created_at=(previous and previous.created_at) or now_iso(),
            )
        )
        await asyncio.to_thread(store.write_plan, _plan_rows(items))
        store.write_json("reporting.json", benchmark.reporting.model_dump(mode="json"))
        provenance = _start_provenance(store, settings, benchmark, len(items))
        invocation = provenance.invocations[-1]
        edit_counts: PhaseCounts | None = None
        score_counts: PhaseCounts | None = None
        ctx = PhaseContext(
            benchmark=benchmark,
            items=items,
            store=store,
            progress=progress,
            policy=policy,
            retry_failed=settings.retry_failed,
            ready_timeout_s=settings.ready_timeout_s,
            sleep=sleep,
        )
        extra = {"transport": transport} if transport is not None else {}
        report: ReportPaths | None = None
        summary: Summary | None = None
        handovers: list[Handover] = []
        pooled: list[EditorClient | RewardClient] = []
        try:
            async with make_http_client(
                Timeouts(read_s=settings.request_timeout_s),
                client=client_name(Path(out).name),
                **extra,
            ) as http:
                editor, reward = await open_clients(
                    http,
                    settings,
                    editor_api_key=_secret(settings.editor_api_key),
                    reward_api_key=_secret(settings.reward_api_key),
                )
                pooled.extend((editor, reward))
                if settings.share_gpu:

                    def record(handover: Handover) -> None:
                        handovers.append(handover)
                        provenance.handovers.append(
                            HandoverRecord.model_validate(
                                {
                                    **handover.as_record(),
                                    "invocation": len(provenance.invocations) - 1,
                                }
                            )
                        )
                        store.write_provenance(provenance)

                    ctx.gpu = GpuSharing(
                        editor,
                        reward,
                        policy=policy,
                        progress=progress,
                        on_handover=record,
                        sleep=sleep,
                    )
                # Every service the run needs, and the protocol, before the first job.
                await check_services(
                    ctx,
                    editor=editor if settings.phase in ("edit", "all") else None,
                    reward=reward if settings.phase in ("score", "all") else None,
                    protocol=settings.protocol,
                    mode=settings.mode,
                )
                if settings.phase in ("edit", "all"):
                    edit_phase = EditPhase(
                        ctx, editor, settings.edit_settings(), settings.edit_concurrency
                    )
                    info = await edit_phase.prepare()
                    provenance.services.editor = _service(settings.editor_url, info)
                    store.write_provenance(provenance)
                    try:
                        edit_counts = await edit_phase.run()
                    finally:
                        _record_endpoints(provenance.services.editor, editor)
                    invocation.edit = edit_counts
                if settings.phase in ("score", "all"):
                    score_phase = ScorePhase(
                        ctx,
                        reward,
                        protocol=settings.protocol,
                        mode=settings.mode,
                        max_new_tokens=settings.max_new_tokens,
                        items_per_request=settings.items_per_request,
                        concurrency=settings.score_concurrency,
                        edited_dir=Path(settings.edited_dir) if settings.edited_dir else None,
                        allow_outside_paths=settings.allow_outside_paths,
                    )
                    reward_info, protocol_info = await score_phase.prepare()
                    provenance.services.reward = _service(settings.reward_url, reward_info)
                    if protocol_info is not None:
                        provenance.services.protocol = protocol_info
                    if score_phase.protocol_definition is not None:
                        # The judge's prompts, verbatim: what the protocol hash stands for.
                        store.write_json(
                            "protocol.json",
                            score_phase.protocol_definition.model_dump(mode="json"),
                        )
                    store.write_provenance(provenance)
                    started = time.monotonic()
                    try:
                        score_counts = await score_phase.run()
                    finally:
                        _record_endpoints(provenance.services.reward, reward)
                        invocation.score_wall_s = round(time.monotonic() - started, 3)
                    invocation.score = score_counts
        finally:
            await close_clients(pooled)
            invocation.finished_at = provenance.finished_at = now_iso()
            store.write_provenance(provenance)
            try:
                report, summary = await asyncio.to_thread(write_report, store, provenance)
            except Exception:
                logger.exception("could not write the report of %s", out)
    return RunOutcome(out, len(items), edit_counts, score_counts, report, summary, handovers)


def _service(url: str, info: BaseModel) -> ServiceRecord:
    """A service's entry: where it is and its /v1/info, whole."""
    return ServiceRecord.model_validate({"url": url, **info.model_dump(mode="json")})


def _record_endpoints(service: ServiceRecord, client: EditorClient | RewardClient) -> None:
    """Which endpoint did how many jobs, and which model each served (several endpoints)."""
    records = endpoint_records(client)
    if records is not None:
        for key, value in records.items():
            setattr(service, key, value)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _start_provenance(
    store: RunStore, settings: RunSettings, benchmark: Benchmark, selected: int
) -> Provenance:
    """The folder's provenance (every earlier invocation kept) with this invocation begun."""
    provenance = store.read_provenance()
    started = now_iso()
    if provenance.started_at is None:
        provenance.started_at = started
    provenance.editbench = software()
    provenance.benchmark = BenchmarkInfo(
        name=benchmark.name,
        path=str(benchmark.path),
        format=benchmark.format,
        items=len(benchmark.items),
        selected=selected,
        categories=benchmark.categories,
        fingerprint=benchmark.fingerprint(),
    )
    provenance.settings = SettingsRecord.model_validate(
        settings.model_dump(mode="json", exclude={"editor_api_key", "reward_api_key"})
    )
    provenance.invocations.append(
        Invocation(started_at=started, phase=settings.phase, selected=selected)
    )
    store.write_provenance(provenance)
    return provenance


def rerender_report(
    out: Path, *, self_contained: bool = False, judge: str | None = None
) -> tuple[ReportPaths, Summary]:
    """``editbench report``: rebuild the reports of a run folder from its files; ``judge``
    names another judge that scored it (orchestrator.judges; JudgeNotFound if none)."""
    store = RunStore(out)
    if not store.exists():
        raise BenchmarkError(f"{out} is not a run folder (no run.json)")
    provenance = store.read_provenance()
    chosen = None if judge is None else select_judge(run_judges(store), judge)
    with store:
        return write_report(store, provenance, self_contained=self_contained, judge=chosen)
