"""How ``editbench compare`` shows its result: rich tables (terminal) and compare.html."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.table import Table

from orchestrator.comparison import Comparison, Difference

_env = Environment(
    loader=PackageLoader("orchestrator.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(ci: list[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _diff_cells(diff: Difference) -> list[str]:
    mark = " *" if diff.significant else ""
    return [
        _f(diff.mean_diff, signed=True) + mark,
        _ci(diff.ci95) + f" n={diff.n}",
        f"{diff.better}/{diff.worse}/{diff.equal}",
    ]


def official_table(result: Comparison) -> Table | None:
    """Each run's official headline (as the benchmark's authors compute it) and its difference
    from the baseline's."""
    official = result.official
    if not official:
        return None
    base = official[0].headline
    table = Table(title=f"Official headline: {official[0].headline_label}")
    table.add_column("run")
    table.add_column("headline", justify="right")
    table.add_column("vs baseline", justify="right")
    for entry in official:
        value = entry.headline
        delta = None if value is None or base is None else value - base
        table.add_row(entry.run, _f(value), _f(delta, signed=True))
    return table


def compare_tables(result: Comparison) -> list[Table]:
    """One table per declared table: each run's mean, then per other run the paired difference;
    then the official headlines when the benchmark has them."""
    tables = _declared_tables(result)
    official = official_table(result)
    return tables + ([official] if official is not None else [])


def _declared_tables(result: Comparison) -> list[Table]:
    labels = [run.label for run in result.runs]
    tables = []
    for declared in result.tables:
        table = Table(
            title=f"compare · {declared.title} · {result.metric_label or result.metric}",
            title_justify="left",
            caption=f"Δ = run - {result.baseline} on shared items · 95% CI: paired t "
            "(Average: Welch) · n pairs · * rows: paired t-test significant after Holm across "
            "the rows; Average / all pairs: interval excludes 0 · +/-/=: items better/worse/equal",
            caption_justify="left",
        )
        table.add_column(declared.row_label)
        for label in labels:
            table.add_column(label, justify="right")
        for label in labels[1:]:
            table.add_column(f"Δ {label}", justify="right")
            table.add_column("95% CI", justify="right")
            table.add_column("+/-/=", justify="right")
        for name, row in declared.rows.items():
            cells = [_f(r.mean) for r in row.runs]
            for diff in row.diffs:
                cells.extend(_diff_cells(diff))
            table.add_row(name, *cells)
        table.add_section()
        cells = [_f(r.mean) for r in declared.average.runs]
        for diff in declared.average.diffs:
            cells.extend(_diff_cells(diff))
        table.add_row("Average", *cells, style="bold")
        cells = ["" for _ in labels]
        for diff in declared.micro.diffs:
            cells.extend(_diff_cells(diff))
        table.add_row("all pairs", *cells)
        tables.append(table)
    return tables


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One metric in the every-metric table: each run's aggregate, each other run's difference."""

    name: str
    label: str
    table: str
    means: list[float | None]
    diffs: list[Difference]


def metric_rows(result: Comparison) -> list[MetricRow]:
    """Per metric of the protocol, in its order: each run's headline aggregate of the first
    declared table (its Average, or its mean over items where the benchmark's headline is
    micro) and every other run's paired difference there."""
    micro = result.reporting.headline == "micro"
    found = []
    for metric in result.metrics:
        tables = [t for t in metric.tables if t.subset is None] or metric.tables
        if not tables:
            continue
        table = tables[0]
        found.append(
            MetricRow(
                name=metric.name,
                label=metric.label,
                table=table.title,
                means=[r.mean for r in table.average.runs],
                diffs=(table.micro.diffs if micro else table.average.diffs),
            )
        )
    return found


def metrics_table(result: Comparison) -> Table:
    """Every metric of the protocol at a glance: each run's Average, and the differences."""
    labels = [run.label for run in result.runs]
    table = Table(
        title="compare · every metric", title_justify="left", caption="first declared table"
    )
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    for label in labels[1:]:
        table.add_column(f"Δ {label}", justify="right")
        table.add_column("95% CI", justify="right")
        table.add_column("+/-/=", justify="right")
    for row in metric_rows(result):
        cells = [_f(m) for m in row.means]
        for diff in row.diffs:
            cells.extend(_diff_cells(diff))
        table.add_row(row.label, *cells)
    return table


def verdict_lines(result: Comparison) -> list[str]:
    """One line per other run and per split table: the headline difference and what it means."""
    micro = result.reporting.headline == "micro"
    lines = []
    for table in result.tables:
        if table.subset is not None:
            continue
        for index, run in enumerate(result.runs[1:]):
            diff = (table.micro if micro else table.average).diffs[index]
            if diff.mean_diff is None:
                lines.append(f"{run.label} vs {result.baseline} ({table.title}): no pairs")
                continue
            meaning = (
                "too few pairs for an interval"
                if diff.ci95 is None
                else "larger than the judge's noise"
                if diff.significant
                else "within the noise (the interval includes 0)"
            )
            lines.append(
                f"{run.label} - {result.baseline} ({table.title}, {result.metric}, "
                f"{'mean over items' if micro else 'Average'}): {diff.mean_diff:+.3f} "
                f"95% CI {_ci(diff.ci95)}, {diff.better} better / {diff.worse} worse / "
                f"{diff.equal} equal: {meaning}"
            )
    return lines


def _spans(result: Comparison) -> list[dict[str, float]]:
    """Per other run, per table: the half-width of the forest plot's axis (a round number)."""
    spans: list[dict[str, float]] = [{} for _ in result.runs[1:]]
    for table in result.tables:
        for index in range(len(spans)):
            diffs = [r.diffs[index] for r in table.rows.values()]
            diffs += [table.average.diffs[index], table.micro.diffs[index]]
            bounds = [abs(v) for d in diffs for v in (d.ci95 or []) + [d.mean_diff or 0]]
            spans[index][table.title] = max(0.5, math.ceil(max(bounds, default=0) * 2) / 2)
    return spans


def render_compare_html(result: Comparison, out: Path | None = None) -> str:
    """compare.html; with ``out`` (where it is written) each run's report and the moved items'
    thumbnails are linked by paths relative to it, where they exist."""

    def link(run_path: str, inside: str | None) -> str | None:
        if out is None or not inside:
            return None
        target = Path(run_path) / inside
        if not target.is_file():
            return None
        return Path(os.path.relpath(target.resolve(), out.resolve())).as_posix()

    runs = {run.label: run.path for run in result.runs}
    reports = [link(run.path, "report.html") for run in result.runs]
    baseline_path = result.runs[0].path
    thumbs = [
        [
            (link(baseline_path, item.baseline_thumb), link(runs[moved.label], item.run_thumb))
            for item in moved.items
        ]
        for moved in result.moved
    ]
    return _env.get_template("compare.html.j2").render(
        result=result,
        spans=_spans(result),
        metric_rows=metric_rows(result),
        reports=reports,
        thumbs=thumbs,
    )
