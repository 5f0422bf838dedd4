"""Aggregation: per category, per language and overall; micro (items) and macro (categories).

Never substitutes a number for a missing score: failed edits, failed judge calls and unscored
answers are counted, reported, and left out of the means.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from orchestrator.benchmarks.reporting import Reporting
from orchestrator.metrics import MetricSet
from orchestrator.records import (
    TOO_MANY_INPUTS,
    Aggregate,
    GroupStats,
    JobCounts,
    JudgeUsage,
    LeftOutValue,
    LogIntegrity,
    MacroStats,
    ModelsSeen,
    ResultRow,
    Summary,
)
from orchestrator.report.breakdown import describe, reported_tables
from orchestrator.report.official import run_statistics
from orchestrator.wording import counted

DEFINITIONS = {
    "metrics": "per item, as the judge protocol computes them (metric_set: names, rules, "
    "scale); a value that is not a finite number on the scale is left out and listed in "
    "'left_out'",
    "micro": "mean over every scored item, whatever its category",
    "macro": "unweighted mean over categories of each category's mean (GEdit-Bench's headline)",
    "ci95": "95% interval of the mean, Student-t: mean +/- t(0.975, n-1)*std/sqrt(n) "
    "(orchestrator.stats.mean_interval); n is given beside it, none below n = 2",
    "judge_error_rate": "(unscored + judge_failed) / (scored + unscored + judge_failed)",
    "unscored": "the judge answered but the score could not be read (generate mode)",
    "official": "the benchmark's official tables and headline, computed as its authors' script "
    "does (present for KRIS-Bench, ImgEdit, RISEBench)",
    "tables": "the benchmark's declared tables (see 'reporting'): per split value and subset, "
    "per row the mean of each metric over scored items; 'average' is the unweighted mean of the "
    "row means, 'micro' the mean over items, 'headline' the declared one of the two",
    "std": "sample standard deviation of the item scores (the spread, not an uncertainty)",
    "judge_cost": "device_s_per_item: the judge's device time per item (its batch's wall time "
    "divided by the items in the batch, as the service reports them; GPU-seconds on a GPU); "
    "items_per_s: items per second of score-phase wall time; tokens: as an OpenAI-compatible "
    "judge reported them",
    "judge_usage": "tokens a remote (OpenAI-compatible) judge endpoint reported for the scores "
    "this report uses, summed; null for a local judge. Failed or superseded requests not counted",
}


def group_stats(rows: Sequence[ResultRow], metrics: MetricSet) -> GroupStats:
    judged = [r for r in rows if r.score_status == "ok"]
    scored = [r for r in judged if r.scored]
    unscored = len(judged) - len(scored)
    judge_failed = sum(1 for r in rows if r.score_status == "failed")
    attempts = len(scored) + unscored + judge_failed
    stats = {
        metric: describe([v for r in scored if (v := r.metric(metric)) is not None])
        for metric in metrics.names
    }
    return GroupStats(
        n_items=len(rows),
        edited=sum(1 for r in rows if r.edited),
        edit_failed=sum(1 for r in rows if r.edit_status == "failed"),
        edit_pending=sum(1 for r in rows if r.edit_status == "pending" and not r.edited_image),
        scored=len(scored),
        unscored=unscored,
        judge_failed=judge_failed,
        score_pending=sum(1 for r in rows if r.score_status == "pending" and r.edited),
        judge_error_rate=round((unscored + judge_failed) / attempts, 4) if attempts else None,
        metrics=stats,
    )


def macro(categories: dict[str, GroupStats], metrics: MetricSet) -> MacroStats:
    """Mean of category means, over the categories that have at least one score."""
    means: dict[str, float | None] = {}
    for metric in metrics.names:
        found = [m for c in categories.values() if (m := c.metric(metric).mean) is not None]
        means[metric] = round(statistics.fmean(found), 4) if found else None
    counted = [name for name, c in categories.items() if c.metric(metrics.headline).n > 0]
    return MacroStats(
        means=means,
        categories_counted=len(counted),
        categories_without_scores=sorted(set(categories) - set(counted)),
    )


def _by(rows: Iterable[ResultRow], key: str) -> dict[str, list[ResultRow]]:
    grouped: dict[str, list[ResultRow]] = {}
    for row in rows:
        grouped.setdefault(str(getattr(row, key)), []).append(row)
    return dict(sorted(grouped.items()))


def _aggregate(rows: Sequence[ResultRow], metrics: MetricSet) -> Aggregate:
    categories = {
        name: group_stats(group, metrics) for name, group in _by(rows, "category").items()
    }
    return Aggregate(micro=group_stats(rows, metrics), macro=macro(categories, metrics))


def summarize(
    rows: Sequence[ResultRow],
    metrics: MetricSet | None = None,
    reporting: Reporting | None = None,
    integrity: dict[str, LogIntegrity] | None = None,
) -> Summary:
    """summary.json's body (without provenance, which the caller adds), over the run's metrics.

    ``tables`` holds the benchmark's declared tables (report/breakdown.py): for GEdit-Bench, its
    own statistics per language and on the Intersection_exist subset."""
    metrics = metrics or MetricSet.legacy()
    reporting = reporting or Reporting()
    categories = {
        name: group_stats(group, metrics) for name, group in _by(rows, "category").items()
    }
    overall = Aggregate(micro=group_stats(rows, metrics), macro=macro(categories, metrics))
    languages = None
    if len({r.language for r in rows if r.language}) > 1:
        languages = {
            language: _aggregate(group, metrics)
            for language, group in _by([r for r in rows if r.language], "language").items()
        }
    left_out = [entry for r in rows for entry in r.left_out]
    models = ModelsSeen(
        editor=sorted({r.editor_model for r in rows if r.editor_model}),
        judge=sorted({r.judge_model for r in rows if r.judge_model}),
        protocol_hash=sorted({r.protocol_hash for r in rows if r.protocol_hash}),
    )
    return Summary(
        metric_set=metrics,
        definitions={**metrics.describe(), **DEFINITIONS},
        categories=categories,
        overall=overall,
        languages=languages,
        reporting=reporting,
        tables=reported_tables(rows, reporting, metrics),
        official=run_statistics(rows, reporting),
        models=models,
        jobs={"edit": job_counts(rows, "edit"), "score": job_counts(rows, "score")},
        judge_usage=judge_usage(rows),
        warnings=warnings_for(rows, models, overall.micro, left_out),
        left_out=left_out,
        integrity=integrity,
    )


def judge_usage(rows: Sequence[ResultRow]) -> JudgeUsage | None:
    """Tokens the judge endpoint reported, summed over every question of every row; None when
    no question reports any (a local judge)."""
    usages = [q.usage for r in rows for q in r.questions or [] if q.usage is not None]
    if not usages:
        return None
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    return JudgeUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        questions=len(usages),
    )


def job_counts(rows: Sequence[ResultRow], phase: str) -> JobCounts:
    """Planned, succeeded, failed permanently or after exhausting retries, and retries."""
    status = [getattr(r, f"{phase}_status") for r in rows]
    failed = [r for r in rows if getattr(r, f"{phase}_status") == "failed"]
    attempts = [getattr(r, f"{phase}_attempts") or 0 for r in rows]
    return JobCounts(
        planned=len(rows),
        ok=status.count("ok"),
        failed_permanent=sum(1 for r in failed if getattr(r, f"{phase}_retryable") is False),
        failed_transient_exhausted=sum(1 for r in failed if getattr(r, f"{phase}_retryable")),
        pending=status.count("pending"),
        retries=sum(getattr(r, f"{phase}_retries") or 0 for r in rows),
        max_attempts=max(attempts, default=0),
    )


def warnings_for(
    rows: Sequence[ResultRow],
    models: ModelsSeen,
    micro: GroupStats,
    left_out: Sequence[LeftOutValue] = (),
) -> list[str]:
    notes = []
    for kind in ("editor", "judge", "protocol_hash"):
        seen: list[str] = getattr(models, kind)
        if len(seen) > 1:
            notes.append(
                f"{len(seen)} different {kind.replace('_', ' ')}s in this run "
                f"({', '.join(seen)}): results are not comparable across them"
            )
    if any(r.editor_meaningful is False for r in rows) or any(
        r.judge_meaningful is False for r in rows
    ):
        notes.append("random-weight models (e.g. tiny) made these results: the scores mean nothing")
    if micro.edit_failed:
        notes.append(
            f"{counted(micro.edit_failed, 'edit')} failed: see results.jsonl for the errors"
        )
    too_many = [r for r in rows if r.edit_error and r.edit_error.type == TOO_MANY_INPUTS]
    if too_many:
        notes.append(
            f"{counted(len(too_many), 'item')} with more input images than the editor takes "
            "were not edited and are left out (an editor whose family takes several input "
            "images, /v1/info family.max_images, edits them)"
        )
    if micro.judge_failed or micro.unscored:
        notes.append(
            f"{counted(micro.judge_failed, 'judge call')} failed and "
            f"{counted(micro.unscored, 'answer')} went unscored: they are left out of the means"
        )
    if left_out:
        shown = "; ".join(f"{e.item_id} {e.metric} = {e.value} ({e.reason})" for e in left_out[:5])
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        notes.append(
            f"{counted(len(left_out), 'damaged metric value')} left out of the means: "
            f"{shown}{more} "
            "(see summary.json 'left_out')"
        )
    pending = micro.edit_pending + micro.score_pending
    if pending:
        notes.append(f"{counted(pending, 'job')} not finished yet: run again with --resume")
    return notes
