"""Reports of a run folder: results.jsonl/.csv (one row per item), summary.json, report.html."""

from orchestrator.report.build import ReportPaths, write_report
from orchestrator.report.results import build_rows
from orchestrator.report.summary import summarize

__all__ = ["ReportPaths", "build_rows", "summarize", "write_report"]
