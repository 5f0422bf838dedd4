"""A service restart in the middle of a run: the run waits for /ready and loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.store import JsonlLog
from tests.support.servers import REPO_ROOT, ServiceProcess, free_port

pytestmark = pytest.mark.tiny


def test_an_editor_restart_mid_run_fails_no_item(model_cache: Path, tmp_path: Path) -> None:
    env = {"EDITOR_MODEL": "tiny", "EDITOR_DEVICES": "cpu", "EDITOR_CACHE_DIR": str(model_cache)}
    port = free_port()
    first = ServiceProcess("editor_service", env, tmp_path / "editor-1.log", port=port)
    first.start()
    first.wait_ready()
    out = tmp_path / "run"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "--benchmark",
            "sample",
            "--limit-per-category",
            "1",
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
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDITBENCH_")},
    )
    second = ServiceProcess("editor_service", env, tmp_path / "editor-2.log", port=port)
    try:
        deadline = time.monotonic() + 600
        while not JsonlLog(out / "edits.jsonl").read():
            assert run.poll() is None and time.monotonic() < deadline, run.stderr
            time.sleep(0.1)
        first.stop()  # SIGTERM, as `docker compose restart` does
        second.start()
        second.wait_ready()
        _, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
        first.stop()
        second.stop()
    assert run.returncode == 0, stderr
    edits = JsonlLog(out / "edits.jsonl").read()
    assert [r["status"] for r in edits] == ["ok", "ok", "ok"]
    assert len({r["job_id"] for r in edits}) == 3
