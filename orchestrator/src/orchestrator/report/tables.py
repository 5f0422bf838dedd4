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


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if std is None else f"{value:.2f} ±{std:.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary_table(summary: Summary, title: str = "editbench") -> Table:
    """Means per category, then micro (over items) and macro (over categories); the spread is
    in summary.json and report.html."""
    table = Table(
        title=title,
        title_justify="left",
        caption="micro: mean over scored items · macro: mean of the category means",
        caption_justify="left",
    )
    for name, justify in (
        ("category", "left"),
        ("n", "right"),
        ("SC", "right"),
        ("PQ", "right"),
        ("Overall", "right"),
        ("edit fail", "right"),
        ("unscored", "right"),
        ("judge err", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def add(name: str, stats: GroupStats, style: str | None = None) -> None:
        n = stats.overall.n
        table.add_row(
            name,
            str(n) + (f"/{stats.n_items}" if n != stats.n_items else ""),
            _fmt(stats.sc.mean),
            _fmt(stats.pq.mean),
            _fmt(stats.overall.mean),
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
        _fmt(macro.sc),
        _fmt(macro.pq),
        _fmt(macro.overall),
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
    subset), as its own scripts print them: SC, PQ, O per row, then the unweighted Average."""
    reporting = summary.reporting
    tables = []
    for declared in summary.tables:
        table = Table(
            title=f"{title} · {declared['title']}",
            title_justify="left",
            caption=f"Average: unweighted mean over {declared['row_label']} rows"
            + (" (headline)" if reporting.headline == "macro" else "")
            + " · micro: mean over items"
            + (" · O = sqrt(SC*PQ) per item" if reporting.overall == "sqrt_sc_pq" else ""),
            caption_justify="left",
        )
        table.add_column(declared["row_label"])
        for name in ("n", "SC", "PQ", "O", "O std"):
            table.add_column(name, justify="right")
        for name, row in declared["rows"].items():
            count = str(row["scored"]) + (
                f"/{row['items']}" if row["scored"] != row["items"] else ""
            )
            table.add_row(
                name,
                count,
                _f3(row["sc"]["mean"]),
                _f3(row["pq"]["mean"]),
                _f3(row["overall"]["mean"]),
                _f3(row["overall"]["std"]),
            )
        table.add_section()
        average, micro = declared["average"], declared["micro"]
        table.add_row(
            "Average",
            f"{average['rows_counted']} rows",
            _f3(average["sc"]),
            _f3(average["pq"]),
            _f3(average["overall"]),
            "",
            style="bold",
        )
        table.add_row(
            "micro",
            str(declared["scored"]),
            _f3(micro["sc"]["mean"]),
            _f3(micro["pq"]["mean"]),
            _f3(micro["overall"]["mean"]),
            _f3(micro["overall"]["std"]),
        )
        tables.append(table)
    return tables


def summary_tables(summary: Summary, title: str = "editbench") -> list[Table]:
    """What the terminal shows: the declared tables when the benchmark splits its report (by
    language, or into subsets), else the per-category table."""
    reporting = summary.reporting
    if len(reporting.group_by) > 1 or reporting.subsets:
        return declared_tables(summary, title)
    return [summary_table(summary, title)]


CSV_COLUMNS = (
    "item_id",
    "category",
    "language",
    "instruction",
    "edit_status",
    "score_status",
    "scored",
    "sc",
    "pq",
    "overall",
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


def rows_csv(rows: Sequence[ResultRow], columns: Sequence[str] = ()) -> str:
    """One CSV row per item; each judge question gets a ``q_<name>`` column, and each of the
    benchmark's reporting ``columns`` (GEdit: Intersection_exist) one of its own."""
    columns = [c for c in columns if c not in CSV_COLUMNS]
    questions: list[str] = []
    for row in rows:
        for q in row.questions or []:
            if f"q_{q.name}" not in questions:
                questions.append(f"q_{q.name}")
    buffer = io.StringIO()
    header = [*CSV_COLUMNS, *columns, *questions]
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writerow({name: cell(name) for name in header})  # question names come from the judge
    for row in rows:
        error = row.edit_error or row.score_error
        flat: dict[str, Any] = {
            **row.dump(),
            "error": json.dumps(error.model_dump(mode="json"), ensure_ascii=False) if error else "",
        }
        for column in columns:
            flat[column] = value_of(row, column)
        for q in row.questions or []:
            flat[f"q_{q.name}"] = q.score
        writer.writerow({key: cell(value) for key, value in flat.items()})
    return buffer.getvalue()
