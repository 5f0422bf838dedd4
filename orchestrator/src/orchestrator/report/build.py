"""Write a run folder's reports from its logs alone (no service, no benchmark needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.report.breakdown import run_reporting
from orchestrator.report.html import render_html
from orchestrator.report.results import build_rows, integrity
from orchestrator.report.summary import summarize
from orchestrator.report.tables import rows_csv
from orchestrator.store import RunStore, atomic_write_text, write_jsonl_atomic
from orchestrator.thumbs import make_thumbnail


@dataclass(frozen=True, slots=True)
class ReportPaths:
    summary: Path
    results_jsonl: Path
    results_csv: Path
    html: Path


def _fill_edited_thumbs(store: RunStore, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        thumb = store.path(row["edited_thumb"])
        image = row["edited_image"]
        if thumb.exists() or not image:
            continue
        source = Path(image) if Path(image).is_absolute() else store.path(image)
        if source.is_file():
            data = make_thumbnail(source.read_bytes())
            if data is not None:
                store.write_file(row["edited_thumb"], data)


def _existing(store: RunStore, rows: list[dict[str, Any]]) -> set[str]:
    paths = set()
    for row in rows:
        for key in ("source_thumb", "edited_thumb", "edited_image"):
            value = row.get(key)
            if value and not Path(value).is_absolute() and store.path(value).is_file():
                paths.add(value)
    return paths


def write_report(store: RunStore, provenance: dict[str, Any]) -> tuple[ReportPaths, dict[str, Any]]:
    """results.jsonl, results.csv, summary.json and report.html, each written atomically."""
    rows = build_rows(store)
    _fill_edited_thumbs(store, rows)
    summary = summarize(rows, run_reporting(store))
    summary["integrity"] = integrity(store)
    summary_doc = {
        **summary,
        "handovers": list(provenance.get("handovers") or []),
        "run": {
            "benchmark": provenance.get("benchmark"),
            "settings": provenance.get("settings"),
            "started_at": provenance.get("started_at"),
            "finished_at": provenance.get("finished_at"),
        },
    }
    paths = ReportPaths(
        summary=store.root / "summary.json",
        results_jsonl=store.root / "results.jsonl",
        results_csv=store.root / "results.csv",
        html=store.root / "report.html",
    )
    write_jsonl_atomic(paths.results_jsonl, rows)
    atomic_write_text(paths.results_csv, rows_csv(rows))
    atomic_write_text(
        paths.summary, json.dumps(summary_doc, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    )
    atomic_write_text(
        paths.html,
        render_html(
            summary=summary, rows=rows, provenance=provenance, existing=_existing(store, rows)
        ),
    )
    return paths, summary_doc
