"""The summary as a rich table (terminal) and the per-item rows as CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if std is None else f"{value:.2f} ±{std:.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary_table(summary: dict[str, Any], title: str = "editbench") -> Table:
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

    def add(name: str, stats: dict[str, Any], style: str | None = None) -> None:
        table.add_row(
            name,
            str(stats["overall"]["n"])
            + (f"/{stats['n_items']}" if stats["overall"]["n"] != stats["n_items"] else ""),
            _fmt(stats["sc"]["mean"]),
            _fmt(stats["pq"]["mean"]),
            _fmt(stats["overall"]["mean"]),
            str(stats["edit_failed"]),
            str(stats["unscored"]),
            _rate(stats["judge_error_rate"]),
            style=style,
        )

    for name, stats in summary["categories"].items():
        add(name, stats)
    micro = summary["overall"]["micro"]
    macro = summary["overall"]["macro"]
    table.add_section()
    add("micro", micro, style="bold")
    table.add_row(
        "macro",
        "",
        _fmt(macro["sc"]),
        _fmt(macro["pq"]),
        _fmt(macro["overall"]),
        "",
        "",
        "",
        style="bold",
    )
    return table


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
    "mode",
    "error",
)


def rows_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One CSV row per item; each judge question gets a ``q_<name>`` column."""
    questions: list[str] = []
    for row in rows:
        for q in row.get("questions") or []:
            if f"q_{q['name']}" not in questions:
                questions.append(f"q_{q['name']}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, *questions], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        error = row.get("edit_error") or row.get("score_error")
        flat = {**row, "error": json.dumps(error, ensure_ascii=False) if error else ""}
        for q in row.get("questions") or []:
            flat[f"q_{q['name']}"] = q.get("score")
        writer.writerow(flat)
    return buffer.getvalue()
