"""A damaged or hand-edited record is named by file and line and left out: never a traceback.

Each case damages one line of a finished run folder's logs, then reads the folder back the way a
user does: ``editbench report`` through its real entry point, and a resumed run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import resolve_settings
from orchestrator.progress import NullProgress
from orchestrator.records import EditRecord
from orchestrator.retry import RetryPolicy
from orchestrator.runner import RunOutcome, run_benchmark
from orchestrator.store import JsonlLog, RecordLog, RunStore
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices
from tests.orchestrator.harness import editbench, finish

POLICY = RetryPolicy(job_deadline_s=600, probe_interval_s=0.01)

Damage = Callable[[dict[str, Any]], Any]


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def _run(benchmark: Path, out: Path, services: FakeServices) -> RunOutcome:
    settings = resolve_settings(
        {
            "benchmark": str(benchmark),
            "out": out,
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
        },
        environ={},
    )
    return asyncio.run(
        run_benchmark(
            settings, NullProgress(), transport=services.transport(), policy=POLICY, sleep=_no_sleep
        )
    )


def _without(key: str) -> Damage:
    return lambda record: {k: v for k, v in record.items() if k != key}


def _with(**changes: Any) -> Damage:
    return lambda record: {**record, **changes}


def _renamed(old: str, new: str) -> Damage:
    return lambda record: {(new if k == old else k): v for k, v in record.items()}


def _score_field(**changes: Any) -> Damage:
    return lambda record: {**record, "score": {**record["score"], **changes}}


# (log, damage) pairs: each one a different way a line stops being a valid record.
CASES: dict[str, tuple[str, Damage | str]] = {
    "edit status unknown": ("edits.jsonl", _with(status="maybe")),
    "edit job id missing": ("edits.jsonl", _without("job_id")),
    "edit image renamed": ("edits.jsonl", _renamed("image", "img")),
    "edit image outside the folder": ("edits.jsonl", _with(image="../../../etc/passwd")),
    "edit image absolute": ("edits.jsonl", _with(image="/etc/passwd")),
    "edit attempts negative": ("edits.jsonl", _with(attempts=-3)),
    "edit params a string": ("edits.jsonl", _with(params="fast")),
    "edit model a number": ("edits.jsonl", _with(model=7)),
    "edit line not json": ("edits.jsonl", '{"job_id": "e-1", "status": '),
    "edit line a list": ("edits.jsonl", "[1, 2, 3]"),
    "score status unknown": ("scores.jsonl", _with(status="great")),
    "score sc a word": ("scores.jsonl", _score_field(sc="high")),
    "score questions not a list": ("scores.jsonl", _score_field(questions="all good")),
    "score item id null": ("scores.jsonl", _with(item_id=None)),
    "score failed without error": ("scores.jsonl", _with(status="failed")),
    "score line a string": ("scores.jsonl", '"just text"'),
    "plan id missing": ("plan.jsonl", _without("id")),
    "plan category a list": ("plan.jsonl", _with(category=["a", "b"])),
}

DAMAGED_LINE = 2  # the second line of the log (not the last: not a torn write)


@pytest.fixture
def finished_run(small_benchmark: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    outcome = _run(small_benchmark, out, FakeServices())
    assert outcome.edit is not None and outcome.edit.ok == 6
    return out


def _damage(folder: Path, log: str, damage: Damage | str) -> str:
    """Damage line DAMAGED_LINE of ``log``; returns the damaged item's id (or '')."""
    path = folder / log
    lines = path.read_text(encoding="utf-8").splitlines()
    original = json.loads(lines[DAMAGED_LINE - 1])
    damaged = damage if isinstance(damage, str) else json.dumps(damage(original))
    lines[DAMAGED_LINE - 1] = damaged
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(original.get("item_id") or original.get("id") or "")


@pytest.mark.parametrize("case", sorted(CASES))
def test_report_names_a_damaged_line_and_goes_on_without_it(finished_run: Path, case: str) -> None:
    log, damage = CASES[case]
    _damage(finished_run, log, damage)
    (finished_run / "results.jsonl").unlink()

    code, stdout, stderr = finish(editbench("report", str(finished_run)), timeout_s=120)

    assert code == 0, stderr
    assert "Traceback" not in stderr
    flat = "".join(stderr.split())  # rich may wrap a long path
    assert f"{finished_run / log}:{DAMAGED_LINE}" in flat
    rows = JsonlLog(finished_run / "results.jsonl").read()
    expected_rows = 5 if log == "plan.jsonl" else 6
    assert len(rows) == expected_rows
    summary = json.loads((finished_run / "summary.json").read_text(encoding="utf-8"))
    if log != "plan.jsonl":
        phase = "edit" if log == "edits.jsonl" else "score"
        assert summary["integrity"][phase]["skipped_lines"] == 1
        assert summary["integrity"][phase]["records"] == 5
    assert "report:" in stdout


def test_a_damaged_edit_record_is_redone_by_a_resumed_run(
    small_benchmark: Path, finished_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    item_id = _damage(finished_run, "edits.jsonl", _with(image="../outside.png"))
    services = FakeServices()
    with caplog.at_level(logging.WARNING):
        outcome = _run(small_benchmark, finished_run, services)
    assert f"{finished_run / 'edits.jsonl'}:{DAMAGED_LINE}" in caplog.text
    assert outcome.edit is not None
    assert (outcome.edit.ok, outcome.edit.skipped) == (1, 5)
    assert services.edited_instructions and len(services.edited_instructions) == 1
    with RunStore(finished_run) as store:
        latest = {r.item_id: r for r in store.edits.read()}
    image = latest[item_id].image
    assert image is not None and ".." not in image


def test_records_read_back_as_models_with_their_fields(finished_run: Path) -> None:
    records = RecordLog(finished_run / "edits.jsonl", EditRecord).read()
    assert len(records) == 6
    assert all(r.ok and r.model is not None and r.params.steps == 2 for r in records)
    assert all(r.response is not None and r.response.timings is not None for r in records)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        # Broken JSON: the file with its line and column.
        ('{"started_at": ', ["provenance.json:1:"]),
        # Parts of the wrong shape: each part left out, with the file.
        (
            '{"handovers": "x", "invocations": 3}',
            ["provenance.json: leaving out handovers", "provenance.json: leaving out invocations"],
        ),
    ],
)
def test_a_damaged_provenance_file_is_named_and_the_report_still_written(
    finished_run: Path, damage: str, named: list[str]
) -> None:
    (finished_run / "provenance.json").write_text(damage, encoding="utf-8")
    (finished_run / "report.html").unlink()
    code, _, stderr = finish(editbench("report", str(finished_run)), timeout_s=120)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    said = "".join(stderr.split())  # the terminal wraps long lines
    for part in named:
        assert "".join(f"{finished_run}/{part}".split()) in said, stderr
    assert (finished_run / "report.html").is_file()


@pytest.mark.parametrize(
    "damage",
    ['{"identity": {"steps": 2,,}}', '{"identity": [1, 2]}', '{"identity": {}, "selection": 3}'],
)
def test_a_damaged_run_json_stops_a_resume_with_its_file(finished_run: Path, damage: str) -> None:
    (finished_run / "run.json").write_text(damage, encoding="utf-8")
    code, _, stderr = finish(
        editbench("run", "--resume", "-o", str(finished_run), "--ready-timeout-s", "0"),
        timeout_s=120,
    )
    assert code == 2
    assert "Traceback" not in stderr
    assert f"{finished_run / 'run.json'}" in "".join(stderr.split())
