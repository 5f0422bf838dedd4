"""summary.json and run.json are read through the models their writers use (records.Summary,
records.RunFile; schema 1): RunStore.read_summary (compare's warnings) and read_run_file (a
resume's saved settings). Every shape editbench wrote reads (fixtures below are built from the
writers at the commits named), a damaged file is an error naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.compare import CompareError, load_run
from orchestrator.metrics import MetricSet
from orchestrator.records import RUN_FILE_SCHEMA, SUMMARY_SCHEMA
from orchestrator.runner import read_saved_identity
from orchestrator.store import DamagedRunFile, RunStore
from tests.orchestrator.fakes import FakeServices
from tests.orchestrator.test_compare import run_sample

WARNINGS = ["random-weight models (e.g. tiny) made these results: the scores mean nothing"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("summary") / "run"
    run_sample(run, FakeServices())
    return run


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _stats(mean: float, *, min_max: bool = True) -> dict[str, Any]:
    stats: dict[str, Any] = {"n": 2, "mean": mean, "std": 0.5, "ci95": [mean - 0.7, mean + 0.7]}
    if min_max:
        stats.update(min=mean - 0.5, max=mean + 0.5)
    return stats


def _group(sc: float) -> dict[str, Any]:
    """report/summary.py group_stats at bd8b994: counts, then sc/pq/overall flat."""
    return {
        "n_items": 2,
        "edited": 2,
        "edit_failed": 0,
        "edit_pending": 0,
        "scored": 2,
        "unscored": 0,
        "judge_failed": 0,
        "score_pending": 0,
        "judge_error_rate": 0.0,
        "sc": _stats(sc),
        "pq": _stats(7.0),
        "overall": _stats(sc - 1),
    }


def _jobs() -> dict[str, Any]:
    counts = {
        "planned": 4,
        "ok": 4,
        "failed_permanent": 0,
        "failed_transient_exhausted": 0,
        "pending": 0,
        "retries": 1,
        "max_attempts": 2,
    }
    return {"edit": counts, "score": counts}


def _first() -> dict[str, Any]:
    """bd8b994 (2026-11-24), report/summary.py summarize + report/build.py's run block."""
    return {
        "definitions": {"sc": "semantic consistency", "macro": "mean of category means"},
        "categories": {"color": _group(8.0), "style": _group(6.0)},
        "overall": {
            "micro": {**_group(7.0), "n_items": 4, "edited": 4, "scored": 4},
            "macro": {
                "sc": 7.0,
                "pq": 7.0,
                "overall": 6.0,
                "categories_counted": 2,
                "categories_without_scores": [],
            },
        },
        "models": {"editor": ["tiny"], "judge": ["tiny-judge"], "protocol_hash": ["abc123"]},
        "warnings": WARNINGS,
        "run": {"benchmark": {"name": "sample"}, "settings": {"steps": 2}, "started_at": "t0"},
    }


def _with_jobs() -> dict[str, Any]:
    """5e764a8 (2026-11-24): job accounting and log integrity."""
    integrity = {"records": 4, "jobs": 4, "duplicate_ok_records": 0}
    return {**_first(), "jobs": _jobs(), "integrity": {"edit": integrity, "score": integrity}}


def _old_table(*, row_label: bool) -> dict[str, Any]:
    """report/breakdown.py reported_tables at 1eed528 (row_label from 9570e44)."""
    rows = {
        name: {"items": 2, "scored": 2, **{m: _stats(sc, min_max=False) for m in ("sc", "pq")}}
        for name, sc in (("color", 8.0), ("style", 6.0))
    }
    for row in rows.values():
        row["overall"] = _stats(6.5, min_max=False)
    table: dict[str, Any] = {
        "title": "all items",
        "split": {},
        "subset": None,
        "row_key": "category",
        "headline": {"sc": 7.0, "pq": 7.0, "overall": 6.5},
        "items": 4,
        "scored": 4,
        "rows": rows,
        "average": {
            "sc": 7.0,
            "pq": 7.0,
            "overall": 6.5,
            "rows_counted": 2,
            "rows_without_scores": [],
        },
        "micro": {m: _stats(7.0, min_max=False) for m in ("sc", "pq", "overall")},
    }
    if row_label:
        table["row_label"] = "Category"
    return table


def _declared_tables() -> dict[str, Any]:
    """1eed528 (2026-12-03): the benchmark's reporting, its tables, the hand-overs."""
    reporting = {"group_by": ["category"], "subsets": {}, "headline": "macro", "overall": "judge"}
    return {
        **_with_jobs(),
        "reporting": reporting,
        "tables": [_old_table(row_label=False)],
        "handovers": [],
    }


def _typed() -> dict[str, Any]:
    """c26eb03 (2026-12-03, the first typed Summary): + judge_usage (62e5f88), row_label."""
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "questions": 4}
    return {**_declared_tables(), "tables": [_old_table(row_label=True)], "judge_usage": usage}


def _metric_set() -> dict[str, Any]:
    """ff649c2 (2026-12-06): the run's metric set; statistics under ``metrics``, also flat."""
    data = _typed()
    for group in [*data["categories"].values(), data["overall"]["micro"]]:
        group["metrics"] = {m: group[m] for m in ("sc", "pq", "overall")}
    macro = data["overall"]["macro"]
    macro["means"] = {m: macro[m] for m in ("sc", "pq", "overall")}
    return {**data, "metric_set": MetricSet.legacy().model_dump(mode="json")}


OLDER_SHAPES = {
    "bd8b994-first": _first,
    "5e764a8-jobs": _with_jobs,
    "1eed528-tables": _declared_tables,
    "c26eb03-typed": _typed,
    "ff649c2-metric-set": _metric_set,
}


def write_summary(run: Path, data: Any) -> None:
    (run / "summary.json").write_text(json.dumps(data), encoding="utf-8")


def test_summary_json_reads_back_as_the_summary_it_was_written_from(finished_run: Path) -> None:
    written = json.loads((finished_run / "summary.json").read_text(encoding="utf-8"))
    assert written["schema"] == SUMMARY_SCHEMA
    summary = RunStore(finished_run).read_summary()
    assert summary is not None and summary.schema_version == SUMMARY_SCHEMA
    assert summary.dump() == written
    assert load_run(finished_run).warnings == written["warnings"]


@pytest.mark.parametrize("shape", OLDER_SHAPES)
def test_every_older_summary_shape_reads_and_compare_takes_its_warnings(
    run: Path, shape: str
) -> None:
    write_summary(run, OLDER_SHAPES[shape]())
    summary = RunStore(run).read_summary()
    assert summary is not None and summary.schema_version == 0
    assert summary.warnings == WARNINGS
    # The flat statistics of the files before the metric set are the ones read.
    assert summary.categories["color"].metric("sc").mean == 8.0
    assert summary.overall.micro.metric("overall").mean == 6.0
    assert summary.overall.macro.means == {"sc": 7.0, "pq": 7.0, "overall": 6.0}
    assert bool(summary.jobs) == (shape != "bd8b994-first")
    if summary.tables:
        table = summary.tables[0]
        assert table.rows["style"]["sc"].mean == 6.0 and table.average["overall"] == 6.5
        assert table.metrics == ["sc", "pq", "overall"] and table.row_label
    assert load_run(run).warnings == WARNINGS


def test_a_run_without_summary_json_compares_without_warnings(run: Path) -> None:
    (run / "summary.json").unlink()
    assert RunStore(run).read_summary() is None
    assert load_run(run).warnings == []


def test_a_damaged_summary_json_is_an_error_naming_the_file_and_the_field(run: Path) -> None:
    data = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    data["overall"]["micro"]["scored"] = "many"
    write_summary(run, data)
    with pytest.raises(DamagedRunFile, match=r"summary\.json: overall\.micro\.scored: "):
        RunStore(run).read_summary()
    with pytest.raises(CompareError, match=r"summary\.json: overall\.micro\.scored: "):
        load_run(run)
    data["overall"]["micro"]["scored"] = 4
    write_summary(run, {**data, "warnings": "none"})
    with pytest.raises(CompareError, match=r"summary\.json: warnings: "):
        load_run(run)
    write_summary(run, [1, 2])
    with pytest.raises(CompareError, match=r"summary\.json: the file: "):
        load_run(run)
    (run / "summary.json").write_text('{"warnings": ', encoding="utf-8")
    with pytest.raises(CompareError, match=r"summary\.json:1:\d+: not valid JSON"):
        load_run(run)


def _run_json_shapes(written: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """run.json as runner.py wrote it at bd8b994 (identity, created_at), f3d194e (+ the latest
    selection) and 02193cd (+ where the services were)."""
    first = {"identity": written["identity"], "created_at": "2026-11-24T10:00:00+00:00"}
    selection = {**first, "selection": written["selection"]}
    return {
        "bd8b994-identity": first,
        "f3d194e-selection": selection,
        "02193cd-services": {**selection, "services": written["services"]},
    }


def test_run_json_reads_back_as_the_run_file_it_was_written_from(finished_run: Path) -> None:
    written = json.loads((finished_run / "run.json").read_text(encoding="utf-8"))
    assert written["schema"] == RUN_FILE_SCHEMA
    saved = RunStore(finished_run).read_run_file()
    assert saved is not None and saved.dump() == written
    assert read_saved_identity(finished_run) == {
        **written["selection"],
        **written["services"],
        **written["identity"],
    }


@pytest.mark.parametrize("shape", ["bd8b994-identity", "f3d194e-selection", "02193cd-services"])
def test_every_older_run_json_shape_reads_and_a_rerun_keeps_its_identity(
    run: Path, shape: str
) -> None:
    current = json.loads((run / "run.json").read_text(encoding="utf-8"))
    old = _run_json_shapes(current)[shape]
    (run / "run.json").write_text(json.dumps(old), encoding="utf-8")
    saved = RunStore(run).read_run_file()
    assert saved is not None and saved.schema_version == 0
    assert saved.identity == current["identity"]
    assert saved.selection == old.get("selection", {})
    assert read_saved_identity(run) == {
        **old.get("selection", {}),
        **old.get("services", {}),
        **current["identity"],
    }
    run_sample(run, FakeServices())  # a rerun into the folder rewrites it as schema 1
    rewritten = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert rewritten["schema"] == RUN_FILE_SCHEMA
    assert rewritten["identity"] == current["identity"]
    assert rewritten["created_at"] == old["created_at"]  # the folder's, not the rerun's


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ({"created_at": "2026-12-06"}, r"run\.json: identity: Field required"),
        ({"identity": [1, 2]}, r"run\.json: identity: "),
        ({"identity": {}, "selection": 3}, r"run\.json: selection: "),
        ([1, 2], r"run\.json: the file: "),
    ],
)
def test_a_damaged_run_json_is_an_error_naming_the_file_and_the_field(
    run: Path, damage: Any, named: str
) -> None:
    (run / "run.json").write_text(json.dumps(damage), encoding="utf-8")
    with pytest.raises(DamagedRunFile, match=named):
        read_saved_identity(run)
