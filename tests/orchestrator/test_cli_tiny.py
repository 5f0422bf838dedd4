"""The editbench CLI against both real services (uvicorn processes, tiny models on the CPU).

Requests are counted on the services' own /metrics, and jobs in the models' own journal (see
held_backends), so "the second run sends nothing for finished jobs" is checked where it matters:
at the service. Interrupts land where an item is held at a service, never where timing puts them.
"""

from __future__ import annotations

import io
import json
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator.benchmarks import load_benchmark
from orchestrator.cli import app
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.harness import (
    HeldServices,
    answered,
    editbench,
    finish,
    held_services,
    wait_editor_idle,
)
from tests.orchestrator.held_backends import hold_tag, item_tag

pytestmark = pytest.mark.tiny

SIZE = "32x32"


@pytest.fixture(scope="module")
def held(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeldServices]:
    """Both services on their tiny models; an item can be held at either (see harness)."""
    with held_services(model_cache, tmp_path_factory.mktemp("services")) as running:
        yield running


@pytest.fixture(scope="module")
def services(held: HeldServices) -> tuple[str, str]:
    return held.editor, held.reward


def test_run_writes_results_and_a_rerun_sends_no_request(
    services: tuple[str, str], tmp_path: Path
) -> None:
    editor, reward = services
    out = tmp_path / "run"
    args = (
        "run",
        "--benchmark",
        "sample",
        "--limit-per-category",
        "1",
        "--out",
        str(out),
        "--editor-url",
        editor,
        "--reward-url",
        reward,
        "--steps",
        "2",
        "--size",
        SIZE,
    )
    edits0, scores0 = answered(editor, "/v1/edits"), answered(reward, "/v1/scores")
    code, stdout, stderr = finish(editbench(*args))
    assert code == 0, stderr
    assert f"report: {(out / 'report.html').resolve()}" in stdout
    assert "物理" in stdout and "micro" in stdout
    assert answered(editor, "/v1/edits") - edits0 == 3

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["categories"]) == {"color", "removal", "物理"}
    assert summary["overall"]["micro"]["scored"] == 3
    assert summary["models"]["editor"][0].startswith("tiny@")
    results = JsonlLog(out / "results.jsonl").read()
    assert len(results) == 3 and all(r["scored"] for r in results)
    with Image.open(out / results[0]["edited_image"]) as edited:
        assert edited.size == (32, 32)
    assert (out / "report.html").stat().st_size > 0
    assert "edit phase: 3 items" in (out / "editbench.log").read_text(encoding="utf-8")
    protocol = json.loads((out / "protocol.json").read_text(encoding="utf-8"))
    assert protocol["info"]["hash"] == summary["models"]["protocol_hash"][0]

    edits1, scores1 = answered(editor, "/v1/edits"), answered(reward, "/v1/scores")
    assert scores1 > scores0
    code, _, stderr = finish(editbench(*args))
    assert code == 0, stderr
    assert answered(editor, "/v1/edits") == edits1
    assert answered(reward, "/v1/scores") == scores1
    assert len(JsonlLog(out / "edits.jsonl").read()) == 3
    assert len(JsonlLog(out / "scores.jsonl").read()) == 3

    rendered = CliRunner().invoke(app, ["report", str(out)])
    assert rendered.exit_code == 0, rendered.output
    assert "物理" in rendered.output


def test_an_interrupted_edit_phase_resumes_without_repeating(
    held: HeldServices, tmp_path: Path
) -> None:
    """Ctrl-C with the second edit in flight: the rerun edits the other two, and nothing again.

    The editor holds the second item until the CLI has exited, so the interrupt always lands in
    the edit phase with exactly one edit recorded, however fast the editor is."""
    hold = f"interrupt-{tmp_path.name}"
    rows = [
        {"id": f"item-{i}", "category": ["color", "物理"][i % 2], "instruction": f"edit {i}"}
        for i in range(3)
    ]
    rows[1]["instruction"] += " " + hold_tag("edit", hold)
    manifest = write_manifest(tmp_path / "bench", rows)
    out = tmp_path / "run"
    args = (
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
        "--size",
        SIZE,
        "--edit-concurrency",
        "1",
    )
    process = editbench(*args)
    assert held.wait_held(process) == {hold}
    process.send_signal(signal.SIGINT)
    code, _, stderr = finish(process)
    assert code == 130, stderr
    assert f"{sys.executable} -m orchestrator run --resume --out {out}" in stderr
    assert [r["item_id"] for r in JsonlLog(out / "edits.jsonl").read()] == ["item-0"]
    held.open_gate(hold)
    wait_editor_idle(held.editor)
    before = answered(held.editor, "/v1/edits")

    code, _, stderr = finish(
        editbench(
            "run",
            "--resume",
            "--out",
            str(out),
            "--editor-url",
            held.editor,
            "--reward-url",
            held.reward,
        )
    )
    assert code == 0, stderr
    assert answered(held.editor, "/v1/edits") - before == 2
    edits = JsonlLog(out / "edits.jsonl").read()
    assert sorted(r["item_id"] for r in edits) == ["item-0", "item-1", "item-2"]
    assert all(r["status"] == "ok" for r in edits)
    assert len(JsonlLog(out / "results.jsonl").read()) == 3


def test_an_interrupted_score_phase_resumes_without_repeating(
    held: HeldServices, tmp_path: Path
) -> None:
    """Score-only over edits made elsewhere (copies of the sources), one item per request,
    one Unicode category chosen on the command line.

    Ctrl-C lands while the judge holds the second item, so exactly one score is recorded; the
    judge's journal shows the rerun scored the others once, and only the held one again."""
    hold = f"interrupt-{tmp_path.name}"
    rows = [
        {
            "id": f"item-{i}",
            "category": ["物理", "color"][i % 2],
            "instruction": f"edit {i} {item_tag(f'item-{i}')}",
        }
        for i in range(8)
    ]
    rows[2]["instruction"] += " " + hold_tag("score", hold)
    manifest = write_manifest(tmp_path / "bench", rows)
    edited = tmp_path / "edited"
    edited.mkdir()
    bench = load_benchmark(manifest)
    for item, data in bench.iter_images(bench.items):
        (edited / f"{item.id}.png").write_bytes(data)
    out = tmp_path / "run"
    args = (
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
        held.reward,
        "--items-per-request",
        "1",
        "--score-concurrency",
        "1",
        "--categories",
        "物理",
    )
    seen = len(held.events("score"))
    process = editbench(*args)
    assert held.wait_held(process) == {hold}
    process.send_signal(signal.SIGINT)
    code, _, stderr = finish(process)
    assert code == 130, stderr
    assert [r["item_id"] for r in JsonlLog(out / "scores.jsonl").read()] == ["item-0"]
    held.open_gate(hold)

    code, _, stderr = finish(editbench(*args))
    assert code == 0, stderr
    runs = Counter(
        item for e in held.events("score")[seen:] if e["event"] == "done" for item in e["items"]
    )
    assert set(runs) == {"item-0", "item-2", "item-4", "item-6"}
    assert runs["item-0"] == runs["item-4"] == runs["item-6"] == 1
    assert runs["item-2"] <= 2  # in flight at the interrupt
    scores = JsonlLog(out / "scores.jsonl").read()
    assert len(scores) == 4 and len({r["job_id"] for r in scores}) == 4
    assert {r["category"] for r in scores} == {"物理"}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["categories"]) == ["物理"]
    assert summary["overall"]["micro"]["scored"] + summary["overall"]["micro"]["unscored"] == 4


def test_single_edit_score_and_status_commands(services: tuple[str, str], tmp_path: Path) -> None:
    editor, reward = services
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--editor-url", editor, "--reward-url", reward])
    assert status.exit_code == 0, status.output
    assert "ready" in status.output and "random weights" in status.output

    source = tmp_path / "source.png"
    Image.new("RGB", (48, 48), (200, 30, 30)).save(source)
    edited = tmp_path / "out" / "edited.png"
    result = runner.invoke(
        app,
        [
            "edit",
            str(source),
            "make it blue",
            "-o",
            str(edited),
            "--editor-url",
            editor,
            "--steps",
            "2",
            "--size",
            SIZE,
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "seed 3" in result.output
    with Image.open(io.BytesIO(edited.read_bytes())) as image:
        assert image.size == (32, 32)

    scored = runner.invoke(
        app, ["score", str(source), str(edited), "make it blue", "--reward-url", reward, "--json"]
    )
    assert scored.exit_code == 0, scored.output
    body = json.loads(scored.stdout)
    assert body["protocol"] == "viescore" and body["mode"] == "expected"
    assert body["scored"] is True and 0 <= body["overall"] <= 10


def test_status_exits_1_when_a_service_is_down(services: tuple[str, str]) -> None:
    editor, _ = services
    result = CliRunner().invoke(
        app, ["status", "--editor-url", editor, "--reward-url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert "not ready" in result.output
