"""The tables a benchmark declares (benchmarks/reporting.py), computed from the result rows.

One table per value of the split keys (GEdit-Bench: per instruction language), and the same again
on each named subset (GEdit-Bench: the ``Intersection_exist`` rows). A table has one row per value
of the row key (GEdit-Bench: task_type) with n, mean, std and a 95% interval of each of the run's
metrics (its protocol's: orchestrator.metrics), then ``average`` (the unweighted mean of the row
means: GEdit's "Average") and ``micro`` (the mean over items). For GEdit-Bench with the `gedit` or
`viescore` protocol this is exactly what its calculate_statistics.py prints (per item overall =
sqrt(SC*PQ), as the judge computed it); only scored items count, as only they reach GEdit's score
CSVs. Nothing here recomputes a protocol's rule.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.benchmarks.reporting import GEDIT_REPORTING, Reporting, truthy, value_of
from orchestrator.metrics import MetricSet
from orchestrator.records import (
    DeclaredTable,
    MetricStats,
    ResultRow,
    TableAverage,
    TableRow,
)
from orchestrator.stats import mean_interval
from orchestrator.store import RunStore

logger = logging.getLogger(__name__)

MISSING = "(none)"


def run_reporting(store: RunStore | Path) -> Reporting:
    """The declaration a run folder was made with (reporting.json), or the default."""
    store = store if isinstance(store, RunStore) else RunStore(store)
    data = store.read_json("reporting.json", damaged_ok=True)
    if data is not None and not isinstance(data, dict):
        logger.warning(
            "%s: not a reporting declaration (a JSON %s, not an object); going on without it",
            store.root / "reporting.json",
            type(data).__name__,
        )
    if not isinstance(data, dict):
        # A run folder from before reporting.json: GEdit-Bench is still reported its way.
        benchmark = store.read_provenance().benchmark
        if benchmark is not None and benchmark.format == "gedit":
            return GEDIT_REPORTING
        return Reporting()
    try:
        return Reporting.model_validate(data)
    except ValidationError as exc:
        # Said, not silent: the tables are then grouped by category alone, not as declared.
        wrong = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'reporting'}: {e['msg']}" for e in exc.errors()
        )
        logger.warning(
            "%s: %s; reported with the default declaration (by category)",
            store.root / "reporting.json",
            wrong,
        )
        return Reporting()


def item_metrics(row: ResultRow, _reporting: Reporting | None = None) -> dict[str, float] | None:
    """A scored item's metric values as its judge protocol computed them (values left out as
    damaged are absent), else None. The reporting declaration no longer changes them."""
    if not row.scored:
        return None
    return {k: float(v) for k, v in row.metrics.items() if v is not None}


def describe(values: Sequence[float]) -> MetricStats:
    """n, mean, sample std, min, max and the Student-t 95% interval of the mean
    (orchestrator.stats), rounded to 6 places; Nones when empty. The one description of a set
    of scores: summary.json's categories and the declared tables both use it."""
    n = len(values)
    if n == 0:
        return MetricStats(n=0)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else None
    interval = mean_interval(values)
    low, high = interval.low, interval.high
    return MetricStats(
        n=n,
        mean=round(mean, 6),
        std=None if std is None else round(std, 6),
        min=round(min(values), 6),
        max=round(max(values), 6),
        ci95=[round(low, 6), round(high, 6)] if low is not None and high is not None else None,
    )


def _key(row: ResultRow, key: str) -> str:
    value = value_of(row, key)
    return MISSING if value is None or value == "" else str(value)


def _table(
    by_row: dict[str, list[ResultRow]], reporting: Reporting, metrics: MetricSet
) -> tuple[dict[str, TableRow], TableAverage, dict[str, MetricStats], int, int]:
    table_rows: dict[str, TableRow] = {}
    scored_all: list[dict[str, float]] = []
    for name in sorted(by_row):
        members = by_row[name]
        scored = [m for m in (item_metrics(r, reporting) for r in members) if m is not None]
        scored_all.extend(scored)
        table_rows[name] = TableRow(
            items=len(members),
            scored=len(scored),
            metrics={
                metric: describe([s[metric] for s in scored if metric in s])
                for metric in metrics.names
            },
        )
    means: dict[str, float | None] = {}
    for metric in metrics.names:
        found = [m for r in table_rows.values() if (m := r[metric].mean) is not None]
        means[metric] = round(statistics.fmean(found), 6) if found else None
    counted = [name for name, r in table_rows.items() if r[metrics.headline].n > 0]
    average = TableAverage(
        means=means,
        rows_counted=len(counted),
        rows_without_scores=sorted(set(table_rows) - set(counted)),
    )
    micro = {
        metric: describe([s[metric] for s in scored_all if metric in s]) for metric in metrics.names
    }
    items = sum(len(group) for group in by_row.values())
    return table_rows, average, micro, items, len(scored_all)


@dataclass(frozen=True, slots=True)
class Partition:
    """One declared table's rows, before any statistics: what reports and compare share."""

    title: str
    split: dict[str, str]
    subset: str | None
    rows: dict[str, list[ResultRow]]  # row name -> result rows, in sorted row order

    def members(self) -> list[ResultRow]:
        return [row for group in self.rows.values() for row in group]


def partitions(rows: Sequence[ResultRow], reporting: Reporting) -> list[Partition]:
    """Per split value: all its rows, then each subset's; grouped by the row key."""
    splits: dict[tuple[str, ...], list[ResultRow]] = {}
    for row in rows:
        splits.setdefault(tuple(_key(row, k) for k in reporting.split_by), []).append(row)
    found = []
    for values in sorted(splits):
        members = splits[values]
        for subset in (None, *reporting.subsets):
            if subset is None:
                chosen = members
            else:
                column = reporting.subsets[subset]
                chosen = [r for r in members if _is_true(value_of(r, column))]
            grouped: dict[str, list[ResultRow]] = {}
            for row in chosen:
                grouped.setdefault(_key(row, reporting.row_key), []).append(row)
            parts = [*values, *([f"{subset} ({reporting.subsets[subset]})"] if subset else [])]
            found.append(
                Partition(
                    title=" · ".join(parts) or "all items",
                    split=dict(zip(reporting.split_by, values, strict=True)),
                    subset=subset,
                    rows={name: grouped[name] for name in sorted(grouped)},
                )
            )
    return found


def reported_tables(
    rows: Sequence[ResultRow], reporting: Reporting, metrics: MetricSet | None = None
) -> list[DeclaredTable]:
    """Every declared table: per split value, all rows then each subset."""
    metrics = metrics or MetricSet.legacy()
    tables = []
    for part in partitions(rows, reporting):
        table_rows, average, micro, items, scored = _table(part.rows, reporting, metrics)
        tables.append(
            DeclaredTable(
                title=part.title,
                split=part.split,
                subset=part.subset,
                row_key=reporting.row_key,
                row_label=reporting.label(reporting.row_key),
                metrics=metrics.names,
                headline={
                    m: average[m] if reporting.headline == "macro" else micro[m].mean
                    for m in metrics.names
                },
                items=items,
                scored=scored,
                rows=table_rows,
                average=average,
                micro=micro,
            )
        )
    return tables


def _is_true(value: Any) -> bool:
    try:
        return truthy(value)
    except ValueError:
        return False
