"""A service restart in the middle of a run: the run waits for /ready and loses nothing."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from orchestrator.benchmarks import load_benchmark
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.harness import editbench, finish, held_env, wait_for
from tests.orchestrator.held_backends import hold_tag, holding, item_tag, read_journal
from tests.support.servers import ServiceProcess, free_port

pytestmark = pytest.mark.tiny


def test_an_editor_restart_mid_run_fails_no_item(model_cache: Path, tmp_path: Path) -> None:
    """`docker compose restart` of the editor in the middle of the edit phase.

    Item 1's edit is held at the editor: the restart begins while it runs (it is let through once
    the drain has begun) and the new process holds item 2 until it is ready, so the restart lands
    mid-phase whatever the speed (before, the test stopped the editor once a first edit was
    recorded: a slow stop found the three edits done, and no restart was tested)."""
    gates, journal = tmp_path / "gates", tmp_path / "journal.jsonl"
    gates.mkdir()
    rows = [
        {"id": f"item-{i}", "category": "color", "instruction": f"edit {i} {item_tag(f'{i}')}"}
        for i in range(3)
    ]
    rows[1]["instruction"] += " " + hold_tag("edit", "during-drain")
    rows[2]["instruction"] += " " + hold_tag("edit", "after-restart")
    manifest = write_manifest(tmp_path / "bench", rows)
    env = held_env("editor_service", model_cache, gates, journal)
    port = free_port()
    first = ServiceProcess("editor_service", env, tmp_path / "editor-1.log", port=port)
    second = ServiceProcess("editor_service", env, tmp_path / "editor-2.log", port=port)
    first.start()
    first.wait_ready()
    out = tmp_path / "run"
    run = editbench(
        "run",
        "--benchmark",
        str(manifest),
        "--phase",
        "edit",
        "--edit-concurrency",
        "1",
        "--steps",
        "2",
        "--size",
        "32x32",
        "--out",
        str(out),
        "--editor-url",
        first.url,
    )
    try:
        wait_for(lambda: bool(holding(journal, gates)), "an edit held", run)
        assert holding(journal, gates) == {"during-drain"}
        stopping = threading.Thread(target=first.stop)  # SIGTERM, as `docker compose restart`
        stopping.start()
        wait_for(lambda: not is_ready(first.url), "the editor draining", run)
        (gates / "during-drain").touch()
        stopping.join()
        second.start()
        second.wait_ready()
        (gates / "after-restart").touch()
        code, _, stderr = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
        for gate in ("during-drain", "after-restart"):
            (gates / gate).touch()
        first.stop()
        second.stop()
    assert code == 0, stderr
    edits = JsonlLog(out / "edits.jsonl").read()
    assert sorted(r["item_id"] for r in edits) == [f"item-{i}" for i in range(3)]
    assert all(r["status"] == "ok" for r in edits)
    assert len({r["job_id"] for r in edits}) == 3
    done = Counter(i for e in read_journal(journal) if e["event"] == "done" for i in e["items"])
    assert done == {f"{i}": 1 for i in range(3)}


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_judge_restart_mid_run_fails_no_item(model_cache: Path, tmp_path: Path) -> None:
    """`docker compose restart` of the judge in the middle of the score phase.

    Items 1 and 3 are held at the judge: the restart begins while item 1 is being scored (it is
    let through once the drain has begun) and the new process holds item 3 until it is ready,
    so the restart lands mid-phase whatever the speed. Nothing fails, nothing is scored twice."""
    gates, journal = tmp_path / "gates", tmp_path / "journal.jsonl"
    gates.mkdir()
    rows = [
        {"id": f"item-{i}", "category": "color", "instruction": f"edit {i} {item_tag(f'{i}')}"}
        for i in range(4)
    ]
    rows[1]["instruction"] += " " + hold_tag("score", "during-drain")
    rows[3]["instruction"] += " " + hold_tag("score", "after-restart")
    manifest = write_manifest(tmp_path / "bench", rows)
    bench = load_benchmark(manifest)
    edited = tmp_path / "edited"
    edited.mkdir()
    for item, data in bench.iter_images(bench.items):
        (edited / f"{item.id}.png").write_bytes(data)

    env = held_env("reward_service", model_cache, gates, journal)
    port = free_port()
    first = ServiceProcess("reward_service", env, tmp_path / "reward-1.log", port=port)
    second = ServiceProcess("reward_service", env, tmp_path / "reward-2.log", port=port)
    first.start()
    first.wait_ready()
    out = tmp_path / "run"
    run = editbench(
        "run",
        "--benchmark",
        str(manifest),
        "--phase",
        "score",
        "--edited-dir",
        str(edited),
        "--out",
        str(out),
        "--reward-url",
        first.url,
        "--items-per-request",
        "1",
        "--score-concurrency",
        "1",
    )
    try:
        wait_for(lambda: bool(holding(journal, gates)), "a judge batch held", run)
        assert holding(journal, gates) == {"during-drain"}
        stopping = threading.Thread(target=first.stop)  # SIGTERM, then waits for the exit
        stopping.start()
        wait_for(lambda: not is_ready(first.url), "the judge draining", run)
        (gates / "during-drain").touch()
        stopping.join()
        second.start()
        second.wait_ready()
        (gates / "after-restart").touch()
        code, _, stderr = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
        for gate in ("during-drain", "after-restart"):
            (gates / gate).touch()
        first.stop()
        second.stop()
    assert code == 0, stderr
    scores = JsonlLog(out / "scores.jsonl").read()
    assert sorted(r["item_id"] for r in scores) == [f"item-{i}" for i in range(4)]
    assert all(r["status"] == "ok" for r in scores)
    done = Counter(i for e in read_journal(journal) if e["event"] == "done" for i in e["items"])
    assert done == {f"{i}": 1 for i in range(4)}
