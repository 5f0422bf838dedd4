"""A benchmark's official statistics (benchmarks/statistics.py) over a run's result rows, and
how the terminal shows them.

Every item the judge answered counts, with the scores it could read (an unparseable dimension is
None: KRIS-Bench's summarize skips it, RISEBench's gpt_eval counts the item as not complete, as
the authors' scripts do); items whose edit or judging failed are not in the authors' files
either, so they are left out here too (the summary's job counts say how many).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from orchestrator.benchmarks.reporting import Reporting
from orchestrator.benchmarks.statistics import JudgedItem, OfficialStatistics, official_statistics
from orchestrator.records import TOO_MANY_INPUTS, ResultRow
from orchestrator.wording import counted


def row_metrics(row: ResultRow) -> dict[str, float | None]:
    """An answered item's scores by name: the protocol's metrics where the record has them,
    and every question's (or named sub-score's) own score."""
    values: dict[str, float | None] = {q.name: q.score for q in row.questions or []}
    values.update(row.metrics)
    return values


def judged_items(rows: Sequence[ResultRow]) -> list[JudgedItem]:
    return [
        JudgedItem(r.item_id, r.category, r.extra, row_metrics(r))
        for r in rows
        if r.score_status == "ok" and r.questions
    ]


def run_statistics(rows: Sequence[ResultRow], reporting: Reporting) -> OfficialStatistics | None:
    """The declared official statistics of these rows (None when the benchmark has none)."""
    if reporting.statistics is None:
        return None
    stats = official_statistics(reporting.statistics, judged_items(rows), reporting.metric_names)
    not_edited = sum(
        1 for r in rows if r.edit_error is not None and r.edit_error.type == TOO_MANY_INPUTS
    )
    if not_edited:
        note = (
            f"{counted(not_edited, 'item')} with more input images than the editor takes "
            "were not edited and are left out (the published tables include them)"
        )
        stats = stats.model_copy(update={"notes": [*stats.notes, note]})
    return stats


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def official_tables(stats: OfficialStatistics) -> list[Table]:
    tables = []
    for index, declared in enumerate(stats.tables):
        caption = None
        if index == 0:
            caption = f"{stats.headline_label}: {_cell(stats.headline)} · {stats.reference}"
            caption += "".join(f"\nnote: {note}" for note in stats.notes)
        table = Table(title=f"{declared.title} (official)", caption=caption)
        table.add_column("")
        for column in declared.columns:
            table.add_column(column, justify="right")
        table.add_column("n", justify="right")
        for row in declared.rows:
            style = "bold" if row.label == "Overall" else None
            table.add_row(row.label, *(_cell(v) for v in row.values), str(row.n), style=style)
        tables.append(table)
    return tables
