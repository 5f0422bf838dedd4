"""``editbench run`` SIGKILLed three times, then run to the end: nothing lost, nothing doubled.

A hard kill gives the CLI no chance to clean up: no finally, no flush. The run folder must still
hold only whole records, every finished job once, and the rerun must redo only the jobs that were
in flight at a kill. Where each kill lands is set by holds at the services' backend seam (the
real tiny models run behind them, see ``held_backends``), not by timing:

1. during the edit phase, with an edit held at the editor;
2. during the score phase, with a judge batch held;
3. as a judge answer comes back, while the CLI saves it, with the next batch held.

Appends are single writes, so a kill cannot tear a line; a power cut or a full disk can. After
kills 1 and 2 the logs get the torn tail such a crash leaves, and the rerun must cope.

The services' own journals count what the models ran, item by item; the final report must equal
that of a run never interrupted.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.harness import (
    HeldServices,
    editbench,
    finish,
    held_services,
    wait_for,
)
from tests.orchestrator.held_backends import hold_tag, item_tag

pytestmark = pytest.mark.tiny

ITEMS = [f"i{n}" for n in range(4)]
CATEGORIES = ("color", "removal", "物理")
KILL_1 = "kill-1-edit"  # holds i1's edit
KILL_2 = "kill-2-score"  # holds i1's score
KILL_3 = "kill-3-score"  # holds i3's score (the kill lands as i2's comes back)
IN_FLIGHT = {"edit": {"i1"}, "score": {"i1", "i2", "i3"}}


@pytest.fixture(scope="module")
def held(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeldServices]:
    with held_services(model_cache, tmp_path_factory.mktemp("services")) as running:
        yield running


def benchmark(folder: Path) -> Path:
    rows = [
        {
            "id": item,
            "category": CATEGORIES[n % 3],
            "instruction": f"make edit number {n} {item_tag(item)}",
        }
        for n, item in enumerate(ITEMS)
    ]
    rows[1]["instruction"] += " " + hold_tag("edit", KILL_1) + " " + hold_tag("score", KILL_2)
    rows[3]["instruction"] += " " + hold_tag("score", KILL_3)
    return write_manifest(folder, rows)


def item_ids(log: Path) -> list[str]:
    return [str(r["item_id"]) for r in JsonlLog(log).read()]


def kill(run: subprocess.Popen[str]) -> None:
    """SIGKILL: no handler, no finally, no flush."""
    run.kill()
    run.communicate()
    assert run.returncode == -signal.SIGKILL


def tear(log: Path) -> None:
    """Leave what a crash half-way through an append leaves: part of a line, no newline."""
    last = log.read_bytes().splitlines()[-1]
    with log.open("ab") as handle:
        handle.write(last[: len(last) // 2])


def runs_done(held: HeldServices, service: str) -> Counter[str]:
    """How many times the model finished a job, per item."""
    return Counter(
        item for e in held.events(service) if e["event"] == "done" for item in e["items"]
    )


def figures(run: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary.pop("run")  # settings and times: where and when, not what
    summary.pop("judge_cost")  # the judge's measured seconds: how long it took, not what it said
    return summary


def test_a_run_killed_three_times_resumes_to_the_report_of_an_uninterrupted_run(
    held: HeldServices, tmp_path: Path
) -> None:
    manifest = benchmark(tmp_path / "bench")

    def run_args(out: Path) -> tuple[str, ...]:
        return (
            "run",
            "--benchmark",
            str(manifest),
            "--out",
            str(out),
            "--editor-url",
            held.editor,
            "--reward-url",
            held.reward,
            "--steps",
            "2",
            "--cfg",
            "1",  # no negative branch: a tiny edit costs a third less
            "--size",
            "32x32",
            "--edit-concurrency",
            "1",
            "--score-concurrency",
            "1",
            "--items-per-request",
            "1",
        )

    out = tmp_path / "run"
    edits, scores = out / "edits.jsonl", out / "scores.jsonl"

    # Kill 1: i0 edited, i1's edit held at the editor.
    run = editbench(*run_args(out))
    assert held.wait_held(run) == {KILL_1}
    kill(run)
    assert item_ids(edits) == ["i0"]
    assert not scores.exists()
    tear(edits)
    held.open_gate(KILL_1)

    # Kill 2: every edit done, i0 scored, i1's judge batch held.
    run = editbench(*run_args(out))
    assert held.wait_held(run) == {KILL_2}
    kill(run)
    assert item_ids(edits) == ITEMS
    assert item_ids(scores) == ["i0"]
    tear(scores)
    held.open_gate(KILL_2)

    # Kill 3: as the judge's answer for i2 comes back; i3's batch is held, so nothing runs past.
    run = editbench(*run_args(out))
    wait_for(lambda: runs_done(held, "score")["i2"] >= 1, "i2 scored", run)
    kill(run)
    assert item_ids(scores)[:2] == ["i0", "i1"]
    assert set(item_ids(scores)) <= {"i0", "i1", "i2"}
    held.open_gate(KILL_3)

    code, _, stderr = finish(editbench(*run_args(out)))
    assert code == 0, stderr

    for log in (edits, scores):
        data = log.read_bytes()
        assert data.endswith(b"\n"), f"{log.name} ends mid-line"
        records = [json.loads(line) for line in data.splitlines()]  # every line whole
        assert sorted(r["item_id"] for r in records) == ITEMS, f"{log.name}: one per item"
        assert all(r["status"] == "ok" for r in records)
    for service in ("edit", "score"):
        done = runs_done(held, service)
        assert set(done) == set(ITEMS)
        repeated = {item for item, count in done.items() if count > 1}
        assert repeated <= IN_FLIGHT[service], f"{service}: redone without being in flight"
        assert max(done.values()) <= 2

    reference = tmp_path / "reference"
    code, _, stderr = finish(editbench(*run_args(reference)))
    assert code == 0, stderr
    assert figures(out) == figures(reference)
    assert figures(out)["overall"]["micro"]["scored"] == len(ITEMS)
    shas = {
        folder: {r["item_id"]: r["image_sha256"] for r in JsonlLog(folder / "edits.jsonl").read()}
        for folder in (out, reference)
    }
    assert shas[out] == shas[reference]
