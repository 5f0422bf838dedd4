"""The summary as a rich table (terminal) and the per-item rows as CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from orchestrator.benchmarks.reporting import value_of
from orchestrator.records import GroupStats, ResultRow, Summary
from orchestrator.report.official import official_tables


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if std is None else f"{value:.2f} ±{std:.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary_table(summary: Summary, title: str = "editbench") -> Table:
    """Means of each of the run's metrics per category, then micro (over items) and macro (over
    categories); the spread is in summary.json and report.html."""
    metrics = summary.metric_set
    table = Table(
        title=title,
        title_justify="left",
        caption="micro: mean over scored items · macro: mean of the category means",
        caption_justify="left",
    )
    table.add_column("category")
    table.add_column("n", justify="right")
    for metric in metrics.metrics:
        table.add_column(metric.label, justify="right")
    for name in ("edit fail", "unscored", "judge err"):
        table.add_column(name, justify="right")

    def add(name: str, stats: GroupStats, style: str | None = None) -> None:
        n = stats.metric(metrics.headline).n
        table.add_row(
            name,
            str(n) + (f"/{stats.n_items}" if n != stats.n_items else ""),
            *(_fmt(stats.metric(m).mean) for m in metrics.names),
            str(stats.edit_failed),
            str(stats.unscored),
            _rate(stats.judge_error_rate),
            style=style,
        )

    for name, stats in summary.categories.items():
        add(name, stats)
    macro = summary.overall.macro
    table.add_section()
    add("micro", summary.overall.micro, style="bold")
    table.add_row(
        "macro",
        "",
        *(_fmt(macro.means.get(m)) for m in metrics.names),
        "",
        "",
        "",
        style="bold",
    )
    return table


def _f3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def declared_tables(summary: Summary, title: str = "editbench") -> list[Table]:
    """The benchmark's declared tables (GEdit-Bench: per language, then its intersection
    subset), as its own scripts print them: each metric per row (GEdit: SC, PQ, O), the
    headline's spread, then the unweighted Average."""
    reporting = summary.reporting
    metrics = summary.metric_set
    headline = metrics.headline
    tables = []
    for declared in summary.tables:
        heading = f"{title} · {declared.title}"
        table = Table(
            title=heading,
            min_width=min(len(heading), 160),  # the title on one line where the screen allows
            title_justify="left",
            caption=f"Average: unweighted mean over {declared.row_label} rows"
            + (" (headline)" if reporting.headline == "macro" else "")
            + " · micro: mean over items",
            caption_justify="left",
        )
        table.add_column(declared.row_label)
        for name in ("n", *(m.label for m in metrics.metrics), f"{metrics.label(headline)} std"):
            table.add_column(name, justify="right")
        for name, row in declared.rows.items():
            count = str(row.scored) + (f"/{row.items}" if row.scored != row.items else "")
            table.add_row(
                name,
                count,
                *(_f3(row[m].mean) for m in metrics.names),
                _f3(row[headline].std),
            )
        table.add_section()
        average, micro = declared.average, declared.micro
        table.add_row(
            "Average",
            f"{average.rows_counted} rows",
            *(_f3(average[m]) for m in metrics.names),
            "",
            style="bold",
        )
        table.add_row(
            "micro",
            str(declared.scored),
            *(_f3(micro[m].mean) for m in metrics.names),
            _f3(micro[headline].std),
        )
        tables.append(table)
    return tables


def summary_tables(summary: Summary, title: str = "editbench") -> list[Table]:
    """What the terminal shows: the declared tables when the benchmark splits its report (by
    language, or into subsets), else the per-category table."""
    reporting = summary.reporting
    if len(reporting.group_by) > 1 or reporting.subsets:
        shown = declared_tables(summary, title)
    else:
        shown = [summary_table(summary, title)]
    if summary.official is not None:
        shown += official_tables(summary.official)
    return shown


CSV_COLUMNS = (
    "item_id",
    "category",
    "language",
    "instruction",
    "edit_status",
    "score_status",
    "scored",
    "seed",
    "edit_s",
    "edited_image",
    "editor_model",
    "judge_model",
    "protocol",
    "protocol_hash",
    "deterministic",
    "mode",
    "error",
)


# What makes a spreadsheet read a cell as a formula (OWASP "CSV Injection"), with the full-width
# forms some locales accept too.
_FORMULA_START = tuple("=+-@\t\r\n") + tuple("\uff1d\uff0b\uff0d\uff20")


def cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that starts (after any blanks) with a
    formula character gets a leading single quote, as OWASP recommends. Numbers, booleans and
    None are left as they are, so numeric columns stay numeric."""
    if not isinstance(value, str):
        return value
    if value.startswith(("\t", "\r")) or value.lstrip(" \n\v\f\u00a0\u3000").startswith(
        _FORMULA_START
    ):
        return "'" + value
    return value


def rows_csv(
    rows: Sequence[ResultRow], columns: Sequence[str] = (), metrics: Sequence[str] = ()
) -> str:
    """One CSV row per item: the run's ``metrics`` (its protocol's, in order) after ``scored``;
    each judge question's score gets a ``q_<name>`` column, and each of the benchmark's
    reporting ``columns`` (GEdit: Intersection_exist) one of its own."""
    fixed = list(CSV_COLUMNS)
    at = fixed.index("scored") + 1
    fixed[at:at] = [m for m in metrics if m not in CSV_COLUMNS]
    columns = [c for c in columns if c not in fixed]
    questions: list[str] = []
    for row in rows:
        for q in row.questions or []:
            if f"q_{q.name}" not in questions:
                questions.append(f"q_{q.name}")
    buffer = io.StringIO()
    header = [*fixed, *columns, *[q for q in questions if q not in fixed]]
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writerow({name: cell(name) for name in header})  # question names come from the judge
    for row in rows:
        error = row.edit_error or row.score_error
        flat: dict[str, Any] = {
            **row.dump(),
            **row.metrics,
            "error": json.dumps(error.model_dump(mode="json"), ensure_ascii=False) if error else "",
        }
        for column in columns:
            flat[column] = value_of(row, column)
        for q in row.questions or []:
            flat[f"q_{q.name}"] = q.score
        writer.writerow({key: cell(value) for key, value in flat.items()})
    return buffer.getvalue()
