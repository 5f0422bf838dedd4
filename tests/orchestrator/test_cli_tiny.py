"""The editbench CLI against both real services (uvicorn processes, tiny models on the CPU).

Requests are counted on the services' own /metrics, so "the second run sends nothing for
finished jobs" is checked where it matters: at the service.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator.benchmarks import load_benchmark
from orchestrator.cli import app
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.support.servers import REPO_ROOT, ServiceProcess

pytestmark = pytest.mark.tiny

SIZE = "32x32"


@pytest.fixture(scope="module")
def services(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("service-logs")
    editor = ServiceProcess(
        "editor_service",
        {"EDITOR_MODEL": "tiny", "EDITOR_DEVICES": "cpu", "EDITOR_CACHE_DIR": str(model_cache)},
        logs / "editor.log",
    )
    reward = ServiceProcess(
        "reward_service",
        {"REWARD_MODEL": "tiny", "REWARD_DEVICES": "cpu", "REWARD_CACHE_DIR": str(model_cache)},
        logs / "reward.log",
    )
    editor.start()
    reward.start()
    try:
        editor.wait_ready()
        reward.wait_ready()
        yield editor.url, reward.url
    finally:
        editor.stop()
        reward.stop()


def answered(url: str, route: str) -> int:
    """How many 200 answers the service gave on ``route`` (from its Prometheus metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = re.compile(
        r'^\w+_http_requests_total\{method="POST",route="'
        + re.escape(route)
        + r'",status="200"\} (\S+)$',
        re.M,
    )
    return sum(int(float(m)) for m in pattern.findall(text))


def wait_editor_idle(url: str) -> None:
    """An interrupted client's last edit may still be running: wait until no worker is busy."""
    for _ in range(600):
        info = httpx.get(f"{url}/v1/info", timeout=10).json()
        if info["queue_depth"] == 0 and all(w["state"] != "busy" for w in info["workers"]):
            return
        time.sleep(0.2)
    raise TimeoutError("editor stayed busy")


def cli_env() -> dict[str, str]:
    """The CLI's environment: this one without EDITBENCH_* (settings come from flags here)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDITBENCH_")}


def editbench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout_s: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout_s)
    return process.returncode, out, err


def interrupt_after(process: subprocess.Popen[str], log: Path, lines: int) -> tuple[int, str]:
    """SIGINT (Ctrl-C) once ``log`` holds ``lines`` records; returns exit code and stderr."""
    deadline = time.monotonic() + 600
    while len(JsonlLog(log).read()) < lines and process.poll() is None:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    return code, err


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
    services: tuple[str, str], tmp_path: Path
) -> None:
    editor, reward = services
    out = tmp_path / "run"
    process = editbench(
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
        "--edit-concurrency",
        "1",
    )
    code, stderr = interrupt_after(process, out / "edits.jsonl", 1)
    assert code == 130, stderr
    assert "editbench run --resume --out" in stderr
    finished = len(JsonlLog(out / "edits.jsonl").read())
    assert 1 <= finished <= 3
    wait_editor_idle(editor)
    before = answered(editor, "/v1/edits")

    code, _, stderr = finish(
        editbench(
            "run", "--resume", "--out", str(out), "--editor-url", editor, "--reward-url", reward
        )
    )
    assert code == 0, stderr
    assert answered(editor, "/v1/edits") - before == 3 - finished
    edits = JsonlLog(out / "edits.jsonl").read()
    assert len(edits) == 3 and len({r["job_id"] for r in edits}) == 3
    assert len(JsonlLog(out / "results.jsonl").read()) == 3


def test_an_interrupted_score_phase_resumes_without_repeating(
    services: tuple[str, str], tmp_path: Path
) -> None:
    """Score-only over edits made elsewhere (copies of the sources), one item per request,
    one Unicode category chosen on the command line."""
    _, reward = services
    rows = [
        {"id": f"item-{i}", "category": ["物理", "color"][i % 2], "instruction": f"edit {i}"}
        for i in range(8)
    ]
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
        reward,
        "--items-per-request",
        "1",
        "--score-concurrency",
        "1",
        "--categories",
        "物理",
    )
    code, stderr = interrupt_after(editbench(*args), out / "scores.jsonl", 1)
    assert code in (0, 130), stderr
    finished = len(JsonlLog(out / "scores.jsonl").read())
    time.sleep(1)  # an in-flight judge call ends within its forward pass
    before = answered(reward, "/v1/scores")

    code, _, stderr = finish(editbench(*args))
    assert code == 0, stderr
    assert answered(reward, "/v1/scores") - before == 4 - finished
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
