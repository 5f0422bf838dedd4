"""A run folder shared by a team: its files follow the user's umask, and results.csv opens in a
spreadsheet as text, never as formulas."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import resolve_settings
from orchestrator.progress import NullProgress
from orchestrator.report.tables import cell
from orchestrator.retry import RetryPolicy
from orchestrator.runner import RunOutcome, run_benchmark
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices
from tests.orchestrator.harness import editbench, finish


def _run(benchmark: Path, out: Path) -> RunOutcome:
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
            settings,
            NullProgress(),
            transport=FakeServices().transport(),
            policy=RetryPolicy(job_deadline_s=600, probe_interval_s=0.01),
        )
    )


@pytest.fixture
def umask() -> Iterator[None]:
    saved = os.umask(0o022)
    os.umask(saved)
    yield
    os.umask(saved)


def _modes(folder: Path) -> dict[str, tuple[bool, int]]:
    return {
        str(path.relative_to(folder)): (path.is_dir(), stat.S_IMODE(path.stat().st_mode))
        for path in folder.rglob("*")
    }


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077])
def test_every_file_of_a_run_folder_follows_the_umask(
    small_benchmark: Path, tmp_path: Path, umask: None, mask: int
) -> None:
    os.umask(mask)
    out = tmp_path / "run"
    outcome = _run(small_benchmark, out)
    assert outcome.report is not None
    modes = _modes(out)
    for name in ("report.html", "summary.json", "results.jsonl", "results.csv", "edits.jsonl"):
        assert name in modes
    assert any(name.startswith("edits/") for name in modes)
    assert any(name.startswith("thumbs/") for name in modes)
    wrong = {
        name: oct(mode)
        for name, (is_dir, mode) in modes.items()
        if mode != (0o777 if is_dir else 0o666) & ~mask
    }
    assert wrong == {}

    # editbench report (a new process, the same umask) rewrites them the same way.
    os.umask(0o002)
    (out / "report.html").unlink()
    code, _, stderr = finish(editbench("report", str(out)), timeout_s=120)
    assert code == 0, stderr
    assert stat.S_IMODE((out / "report.html").stat().st_mode) == 0o664
    assert stat.S_IMODE((out / "summary.json").stat().st_mode) == 0o664


FORMULAS = [
    '=HYPERLINK("http://x.test","x")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "  =1+1",
    "\n=1+1",
    "\uff1d1+1",  # full-width =
    "\uff0bcmd",
    "\uff0d1",
    "\uff20SUM(1)",
]


@pytest.mark.parametrize("value", FORMULAS)
def test_a_cell_that_starts_a_formula_is_quoted(value: str) -> None:
    assert cell(value) == "'" + value


@pytest.mark.parametrize("value", ["plain", "a=b", "100", "", '{"type": "x"}', "物理 -1"])
def test_other_text_and_every_number_stays_as_it_is(value: str) -> None:
    assert cell(value) == value
    for number in (-1.5, -3, 0, 7.25, True, None):
        assert cell(number) == number


def test_results_csv_neutralises_formulas_and_results_jsonl_keeps_the_text(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"=1+{i}", "category": "@cat", "instruction": f"+do {i}"} for i in range(2)] + [
        {"id": "-9", "category": "=HYPERLINK(1)", "instruction": "-2+3"}
    ]
    benchmark = write_manifest(tmp_path / "bench", rows)
    out = tmp_path / "run"
    _run(benchmark, out)

    text = (out / "results.csv").read_text(encoding="utf-8")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["item_id"] for r in parsed] == ["'=1+0", "'=1+1", "'-9"]
    assert [r["category"] for r in parsed] == ["'@cat", "'@cat", "'=HYPERLINK(1)"]
    assert [r["instruction"] for r in parsed] == ["'+do 0", "'+do 1", "'-2+3"]
    for row in parsed:  # every cell a spreadsheet would evaluate starts with a quote
        for value in row.values():
            assert not value.lstrip(" \n").startswith(("=", "+", "@", "\t", "\r")), value
        assert float(row["overall"]) >= 0 and float(row["sc"]) >= 0  # numbers stay numbers

    results = JsonlLog(out / "results.jsonl").read()
    assert [r["item_id"] for r in results] == ["=1+0", "=1+1", "-9"]
    assert [r["instruction"] for r in results] == ["+do 0", "+do 1", "-2+3"]
    # The same numbers in both files (a negative score would have been quoted in the CSV).
    assert [r["overall"] for r in results] == [float(row["overall"]) for row in parsed]
    assert json.loads((out / "summary.json").read_text())["categories"].keys() == {
        "@cat",
        "=HYPERLINK(1)",
    }
