"""Write a run folder's reports from its logs alone (no service, no benchmark needed)."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from orchestrator.judges import JudgeId, run_judges
from orchestrator.provenance import Provenance
from orchestrator.records import ResultRow, Summary, is_inside_relpath
from orchestrator.report.breakdown import run_reporting
from orchestrator.report.cost import judge_cost
from orchestrator.report.html import render_html
from orchestrator.report.results import RunRecords, build_rows, integrity
from orchestrator.report.summary import summarize
from orchestrator.report.tables import rows_csv
from orchestrator.store import RunStore, UnsafeRunPath, atomic_write_text, write_jsonl_atomic
from orchestrator.thumbs import make_thumbnail

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReportPaths:
    summary: Path
    results_jsonl: Path
    results_csv: Path
    html: Path


def _fill_edited_thumbs(store: RunStore, rows: list[ResultRow]) -> None:
    for row in rows:
        image = row.edited_image
        # Only images of this run folder: one given with --edited-dir got its thumbnail when it
        # was scored, and a path edited into a record (or a link put in the folder) must not
        # make the report read elsewhere.
        thumb = row.edited_thumb
        if not image or not is_inside_relpath(image) or store.path(thumb).is_symlink():
            continue
        if store.path(thumb).exists() or not store.has_file(image):
            continue
        try:
            source = store.read_file(image)
            if source is None:
                continue
            data = make_thumbnail(source)
            if data is not None:
                store.write_file(thumb, data)
        except UnsafeRunPath as exc:
            logger.warning("%s: no thumbnail made", exc)


def _images(store: RunStore, rows: list[ResultRow], self_contained: bool) -> dict[str, str]:
    """Relative path -> src of every image the page shows that exists. Self-contained: the
    thumbnails as data URIs, and no link to the full-size edits (they stay in the folder)."""
    found: dict[str, str] = {}
    for row in rows:
        shown: list[str | None] = [row.source_thumb, *row.more_thumbs.values(), row.edited_thumb]
        if not self_contained:
            shown.append(row.edited_image)
        for value in shown:
            # Only plain files of the run folder, never reached through a link.
            if not value or not is_inside_relpath(value) or not store.has_file(value):
                continue
            if self_contained:
                try:
                    raw = store.read_file(value)
                except UnsafeRunPath as exc:
                    logger.warning("%s: left out of the report", exc)
                    continue
                if raw is None:
                    continue
                data = base64.b64encode(raw).decode("ascii")
                found[value] = f"data:image/jpeg;base64,{data}"
            else:
                found[value] = value
    return found


def report_paths(root: Path, judge: JudgeId | None = None) -> ReportPaths:
    """Where a report goes: the run's own judge in report.html and so on; another judge's
    (``editbench report --judge``) beside it, in report-<judge slug>.html and so on."""
    tail = "" if judge is None else f"-{judge.slug}"
    return ReportPaths(
        summary=root / f"summary{tail}.json",
        results_jsonl=root / f"results{tail}.jsonl",
        results_csv=root / f"results{tail}.csv",
        html=root / f"report{tail}.html",
    )


def write_report(
    store: RunStore,
    provenance: Provenance,
    *,
    self_contained: bool = False,
    judge: JudgeId | None = None,
) -> tuple[ReportPaths, Summary]:
    """results.jsonl, results.csv, summary.json and report.html, each written atomically.

    ``self_contained``: report.html carries its thumbnails inside (one file to mail or attach).
    ``judge``: that judge's scores (see orchestrator.judges), in files named for it."""
    records = RunRecords.read(store, judge)
    rows = build_rows(store, records)
    _fill_edited_thumbs(store, rows)
    handovers = [h.dump() for h in provenance.handovers]
    summary = summarize(rows, records.metrics, run_reporting(store), integrity(records)).model_copy(
        update={
            "judge": None if judge is None else judge.describe(),
            "judges": [j.describe() for j in run_judges(store)],
            "handovers": handovers,
            "run": {
                "benchmark": None if provenance.benchmark is None else provenance.benchmark.dump(),
                "settings": None if provenance.settings is None else provenance.settings.dump(),
                "started_at": provenance.started_at,
                "finished_at": provenance.finished_at,
            },
        }
    )
    summary = summary.model_copy(
        update={
            "judge_cost": judge_cost(rows, records.scores, summary.judge_usage, provenance, judge)
        }
    )
    paths = report_paths(store.root, judge)
    write_jsonl_atomic(paths.results_jsonl, rows)
    atomic_write_text(
        paths.results_csv,
        rows_csv(rows, summary.reporting.columns(), summary.metric_set.names),
    )
    atomic_write_text(
        paths.summary,
        json.dumps(summary.dump(), ensure_ascii=False, indent=2, allow_nan=False) + "\n",
    )
    atomic_write_text(
        paths.html,
        render_html(
            summary=summary,
            rows=rows,
            provenance=provenance,
            images=_images(store, rows, self_contained),
        ),
    )
    return paths, summary
