"""The demo driver: starts both services on tiny models, runs the sample, always stops them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator.store import JsonlLog
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.tiny


def test_demo_runs_the_sample_and_stops_both_services(model_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITBENCH_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.demo",
            "--out",
            str(out),
            "--per-category",
            "1",
            "--size",
            "32x32",
            "--cache-dir",
            str(model_cache),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"open {(out / 'report.html').resolve()}" in done.stdout
    assert "services stopped" in done.stdout
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["categories"]) == {"color", "removal", "物理"}
    assert len(JsonlLog(out / "results.jsonl").read()) == 3
    urls = re.findall(r"started \w+ at (http://127\.0\.0\.1:\d+)", done.stdout)
    assert len(urls) == 2, done.stdout  # the editor and the judge
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)
