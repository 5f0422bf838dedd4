"""``editbench compare``: runs side by side, and is the difference larger than the judge's noise?

Every run is compared with the first (the baseline) in the baseline's declared tables (per
language, per category, subsets: see benchmarks/reporting.py), for every metric of the runs'
judge protocol (``metrics``; ``tables`` repeats the chosen one, the headline by default). Per
row and per table:

- each run's mean over its own scored items (as its report shows it);
- on the items both runs scored with the same judge protocol (same item id and protocol hash),
  the paired difference ``run - baseline`` with its 95% Student-t interval and n
  (orchestrator.stats: at 4 items a row a percentile bootstrap is too narrow), the paired
  t-test's p-value, that p-value Holm-adjusted across the table's rows (what ``significant``
  means for a row), and how many items got better, worse or stayed equal.

A table's ``average`` is the unweighted mean over its rows (GEdit's Average), its interval the
Welch-Satterthwaite t interval of a mean of row means; ``micro`` pairs every shared item. Runs
judged by different models or protocols are refused unless the caller allows them: their scores
are not on one scale.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import stats
from orchestrator.benchmarks.reporting import Reporting
from orchestrator.comparison import (
    AverageMean,
    CompareAverage,
    CompareMicro,
    CompareRow,
    CompareTable,
    Comparison,
    Difference,
    MetricComparison,
    MovedItems,
    MovedPair,
    OfficialHeadline,
    RunDescription,
    RunMean,
    SettingDifference,
    comparison_text,
)
from orchestrator.judges import run_judges, select_judge
from orchestrator.metrics import MetricSet
from orchestrator.provenance import Provenance
from orchestrator.records import ResultRow
from orchestrator.report.breakdown import item_metrics, partitions, run_reporting
from orchestrator.report.official import run_statistics
from orchestrator.report.results import RunRecords, build_rows
from orchestrator.store import DamagedRunFile, RunStore, atomic_write_text

INTERVALS = {
    "rows": "95% Student-t interval of the paired mean difference (run - baseline), n pairs; "
    "per row, not adjusted for the many rows",
    "average": "95% Welch-Satterthwaite t interval of the unweighted mean of the row differences",
    "all": "95% Student-t interval of the paired mean difference over every shared item",
    "significance": "rows: paired t-test, Holm-adjusted across the rows of one table "
    "(p_holm < 0.05); Average and all items: one test each (the interval excludes 0)",
    "pairing": "same item id and judge protocol hash, scored in both runs",
}
EQUAL_EPS = 1e-9
# Settings shown side by side when they differ between the runs (what made each run's numbers).
COMPARED_SETTINGS = (
    "steps",
    "cfg",
    "negative_prompt",
    "seed_policy",
    "seed",
    "width",
    "height",
    "protocol",
    "mode",
    "max_new_tokens",
)
MOVED_ITEMS = 12  # the items that moved most, per run against the baseline


class CompareError(ValueError):
    """Runs that cannot be compared, with a message that says why."""


@dataclass(slots=True)
class LoadedRun:
    label: str
    path: Path
    rows: list[ResultRow]
    reporting: Reporting
    provenance: Provenance
    metrics: MetricSet = field(default_factory=MetricSet.legacy)
    judges: list[str] = field(default_factory=list)
    protocol_hashes: list[str] = field(default_factory=list)
    editors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run's own (summary.json)

    def describe(self) -> RunDescription:
        setting = self.provenance.setting
        benchmark = self.provenance.benchmark
        return RunDescription(
            label=self.label,
            path=str(self.path),
            benchmark=None if benchmark is None else benchmark.name,
            benchmark_fingerprint=None if benchmark is None else benchmark.fingerprint,
            editor=self.editors,
            judge=self.judges,
            protocol_hash=self.protocol_hashes,
            settings={
                k: setting(k)
                for k in ("steps", "cfg", "seed_policy", "seed", "width", "height", "protocol")
                if setting(k) is not None
            },
            items=len(self.rows),
            scored=sum(1 for r in self.rows if r.scored),
            warnings=self.warnings,
            identity={k: setting(k) for k in COMPARED_SETTINGS},
        )


def load_run(path: Path, label: str | None = None, judge: str | None = None) -> LoadedRun:
    """A run folder's result rows; ``judge`` names one of its judges (JudgeNotFound if none)."""
    store = RunStore(path)
    if not store.exists():
        raise CompareError(f"{path} is not a run folder (no run.json)")
    chosen = None if judge is None else select_judge(run_judges(store), judge)
    records = RunRecords.read(store, chosen)
    rows = build_rows(store, records)
    try:
        summary = store.read_summary()
    except DamagedRunFile as exc:
        raise CompareError(str(exc)) from None
    return LoadedRun(
        label=label or path.resolve().name,
        path=path,
        rows=rows,
        reporting=run_reporting(store),
        provenance=store.read_provenance(),
        metrics=records.metrics,
        judges=sorted({r.judge_model for r in rows if r.judge_model}),
        protocol_hashes=sorted({r.protocol_hash for r in rows if r.protocol_hash}),
        editors=sorted({r.editor_model for r in rows if r.editor_model}),
        warnings=[] if summary is None else summary.warnings,
    )


def check_judges(runs: Sequence[LoadedRun]) -> list[str]:
    """Differences in judge model or protocol between runs, one line each (empty: comparable)."""
    problems = []
    for kind in ("judges", "protocol_hashes"):
        seen = {run.label: getattr(run, kind) for run in runs}
        if len({tuple(v) for v in seen.values()}) > 1:
            what = "judge models" if kind == "judges" else "judge protocol hashes"
            problems.append(
                f"different {what}: "
                + "; ".join(f"{label}: {', '.join(v) or '-'}" for label, v in seen.items())
            )
    return problems


def _value(row: ResultRow, reporting: Reporting, metric: str) -> float | None:
    values = item_metrics(row, reporting)
    return None if values is None else values.get(metric)


def _paired(
    base: Sequence[ResultRow],
    other_by_id: dict[str, ResultRow],
    reporting: Reporting,
    metric: str,
) -> list[float]:
    diffs = []
    for row in base:
        match = other_by_id.get(row.item_id)
        if match is None or match.protocol_hash != row.protocol_hash:
            continue
        a, b = _value(row, reporting, metric), _value(match, reporting, metric)
        if a is not None and b is not None:
            diffs.append(b - a)
    return diffs


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 6) if values else None


def _difference(strata: Sequence[Sequence[float]]) -> Difference:
    """A row's (one stratum) or the Average's (several) paired difference with its t interval."""
    flat = [d for s in strata for d in s]
    if len(strata) == 1:
        test = stats.t_test(flat)
        interval, p = test.interval, test.p
    else:
        interval, p = stats.macro_mean_interval(strata), None
    ci = None if interval.low is None or interval.high is None else [interval.low, interval.high]
    return Difference(
        pairs=len(flat),
        n=interval.n,
        mean_diff=None if interval.estimate is None else round(interval.estimate, 6),
        ci95=None if ci is None else [round(v, 6) for v in ci],
        method=interval.method,
        p=None if p is None else round(p, 6),
        significant=interval.excludes(0.0),
        better=sum(1 for d in flat if d > EQUAL_EPS),
        worse=sum(1 for d in flat if d < -EQUAL_EPS),
        equal=sum(1 for d in flat if abs(d) <= EQUAL_EPS),
    )


def _holm_rows(entries: Sequence[Difference]) -> None:
    """Holm across a table's rows: ``p_holm`` and ``significant`` say what survives it."""
    adjusted = stats.holm([e.p for e in entries])
    for entry, p in zip(entries, adjusted, strict=True):
        entry.p_holm = None if p is None else round(p, 6)
        entry.significant = p is not None and p < 1.0 - stats.LEVEL
        entry.significant_uncorrected = entry.ci95 is not None and (
            entry.ci95[0] > 0 or entry.ci95[1] < 0
        )


def official_headlines(runs: Sequence[LoadedRun]) -> list[OfficialHeadline]:
    """Each run's official statistics headline (KRIS-Bench, ImgEdit, RISEBench), as their
    authors compute it; empty when the baseline's benchmark declares none."""
    if runs[0].reporting.statistics is None:
        return []
    found = []
    for run in runs:
        stats = run_statistics(run.rows, run.reporting)
        found.append(
            OfficialHeadline(
                run=run.label,
                statistics=None if stats is None else stats.name,
                headline_label=None if stats is None else stats.headline_label,
                headline=None if stats is None else stats.headline,
            )
        )
    return found


def compare_runs(
    runs: Sequence[LoadedRun],
    *,
    metric: str | None = None,
    allow_different_judges: bool = False,
) -> Comparison:
    """compare.json's body. The first run is the baseline; its reporting declaration and its
    protocol's metrics are used (``metric``: the one ``tables`` shows; None: the headline)."""
    if len(runs) < 2:
        raise CompareError("compare needs at least two run folders")
    metrics = runs[0].metrics
    try:
        chosen = metrics.check(metric)
    except ValueError as exc:
        raise CompareError(f"--metric: {exc}") from None
    problems = check_judges(runs)
    if problems and not allow_different_judges:
        raise CompareError(
            "these runs were judged differently, so their scores are not on one scale "
            "(--allow-different-judges compares them anyway):\n  " + "\n  ".join(problems)
        )
    baseline = runs[0]
    per_metric = [
        MetricComparison(name=m.name, label=m.label, rule=m.rule, tables=_tables(runs, m.name))
        for m in metrics.metrics
    ]
    warnings = [f"compared anyway: {p}" for p in problems]
    fingerprints = {run.describe().benchmark_fingerprint for run in runs}
    if len(fingerprints) > 1:
        warnings.append("the runs used different benchmark files: only shared item ids pair")
    return Comparison(
        metric=chosen,
        metric_label=metrics.label(chosen),
        metric_set=metrics,
        official=official_headlines(runs),
        baseline=baseline.label,
        runs=[run.describe() for run in runs],
        reporting=baseline.reporting,
        intervals=INTERVALS,
        tables=next(m.tables for m in per_metric if m.name == chosen),
        metrics=per_metric,
        warnings=warnings,
        differences=_differences(runs),
        moved=[_moved(baseline, run, chosen) for run in runs[1:]],
    )


def _differences(runs: Sequence[LoadedRun]) -> list[SettingDifference]:
    """Each setting, editor or judge whose value is not the same in every run, with each run's."""
    described = [run.describe() for run in runs]
    rows: list[tuple[str, list[Any]]] = [
        ("editor", [", ".join(d.editor) or None for d in described]),
        ("judge", [", ".join(d.judge) or None for d in described]),
        ("benchmark", [d.benchmark for d in described]),
        *((k, [d.identity.get(k) for d in described]) for k in COMPARED_SETTINGS),
    ]
    return [
        SettingDifference(setting=name, values=values)
        for name, values in rows
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1
    ]


def _moved(baseline: LoadedRun, run: LoadedRun, metric: str) -> MovedItems:
    """The paired items whose ``metric`` moved most (largest |run - baseline|; unchanged ones
    left out), each with both runs' values and edited thumbnails (paths inside each run folder)."""
    by_id = {row.item_id: row for row in run.rows}
    pairs: list[MovedPair] = []
    for row in baseline.rows:
        match = by_id.get(row.item_id)
        if match is None or match.protocol_hash != row.protocol_hash:
            continue
        a, b = _value(row, baseline.reporting, metric), _value(match, baseline.reporting, metric)
        if a is None or b is None:
            continue
        pairs.append(
            MovedPair(
                item_id=row.item_id,
                category=row.category,
                instruction=row.instruction,
                baseline=round(a, 6),
                run=round(b, 6),
                diff=round(b - a, 6),
                baseline_thumb=row.edited_thumb,
                run_thumb=match.edited_thumb,
            )
        )
    pairs.sort(key=lambda p: (-abs(p.diff), p.item_id))
    changed = [p for p in pairs if abs(p.diff) > EQUAL_EPS]
    return MovedItems(label=run.label, pairs=len(pairs), items=changed[:MOVED_ITEMS])


def _tables(runs: Sequence[LoadedRun], metric: str) -> list[CompareTable]:
    """The baseline's declared tables for one metric, every run against the baseline."""
    baseline = runs[0]
    reporting = baseline.reporting
    by_id = [{r.item_id: r for r in run.rows} for run in runs]
    tables = []
    for part in partitions(baseline.rows, reporting):
        rows: dict[str, CompareRow] = {}
        strata: list[list[list[float]]] = [[] for _ in runs[1:]]
        for name, members in part.rows.items():
            ids = [m.item_id for m in members]
            means = []
            for run_rows in by_id:
                values = [
                    v
                    for i in ids
                    if i in run_rows and (v := _value(run_rows[i], reporting, metric)) is not None
                ]
                means.append(RunMean(n=len(values), mean=_mean(values)))
            diffs = []
            for index, other in enumerate(by_id[1:]):
                paired = _paired(members, other, reporting, metric)
                strata[index].append(paired)
                diffs.append(_difference([paired]))
            rows[name] = CompareRow(runs=means, diffs=diffs)
        for index in range(len(runs) - 1):
            _holm_rows([entry.diffs[index] for entry in rows.values()])
        averages = []
        for index in range(len(runs)):
            row_means = [r.runs[index].mean for r in rows.values()]
            known = [m for m in row_means if m is not None]
            averages.append(AverageMean(rows=len(known), mean=_mean(known)))
        average = CompareAverage(runs=averages, diffs=[])
        micro = CompareMicro(diffs=[])
        for index in range(len(runs) - 1):
            average.diffs.append(_difference([s for s in strata[index] if s]))
            micro.diffs.append(_difference([[d for s in strata[index] for d in s]]))
        tables.append(
            CompareTable(
                title=part.title,
                split=part.split,
                subset=part.subset,
                row_key=reporting.row_key,
                row_label=reporting.label(reporting.row_key),
                rows=rows,
                average=average,
                micro=micro,
            )
        )
    return tables


def write_compare(result: Comparison, out: Path) -> tuple[Path, Path]:
    """compare.json and compare.html in ``out``, each written atomically."""
    from orchestrator.report.compare_view import render_compare_html

    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "compare.json", out / "compare.html"
    atomic_write_text(json_path, comparison_text(result))
    atomic_write_text(html_path, render_compare_html(result, out))
    return json_path, html_path
