"""docker-compose.yml for real: both services on CPU with tiny models, the CLI in its container.

Each test brings the stack up (``up -d --wait``, quick when it is up already), so they do not
depend on their order; the last one takes it down as the README does.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.docker.compose import REPO_ROOT, Compose, docker
from tests.docker.documented import bash_block, command, run_bash

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

SERVICES = {"editor": ("EDITBENCH_EDITOR_PORT", 8001), "reward": ("EDITBENCH_REWARD_PORT", 8002)}


def url(stack: Compose, service: str) -> str:
    return f"http://127.0.0.1:{stack.env[SERVICES[service][0]]}"


def png(size: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_compose_up_wait_brings_both_services_to_healthy(running_stack: Compose) -> None:
    states = {c["Service"]: c for c in running_stack.containers()}
    for service, (_, container_port) in SERVICES.items():
        assert states[service]["State"] == "running"
        assert states[service]["Health"] == "healthy"
        response = httpx.get(f"{url(running_stack, service)}/ready", timeout=10)
        assert response.status_code == 200
        assert response.json()["ready"] is True
        # published on the loopback interface only
        bindings = docker("port", running_stack.container_id(service), f"{container_port}/tcp")
        assert bindings.split() == [f"127.0.0.1:{running_stack.env[SERVICES[service][0]]}"]


def test_compose_cpu_stack_runs_sample_benchmark_and_writes_report(
    running_stack: Compose, docker_logs: Path
) -> None:
    """DEPLOY.md's command as written (bash, from the page), through the orchestrator's
    container, into ./runs of the folder it runs in: the files are the caller's and the printed
    report path is the host's (EDITBENCH_PATH_MAP), not the container's."""
    runs = Path(running_stack.env["EDITBENCH_RUNS_DIR"])
    line = command(bash_block("docker compose run --rm"), "mkdir -p runs && docker compose run")
    done = run_bash(
        line,
        cwd=runs.parent,  # so the page's $PWD/runs is the folder mounted as /workspace/runs
        env={
            **os.environ,
            **running_stack.env,
            "COMPOSE_PROJECT_NAME": running_stack.project,
            "COMPOSE_FILE": str(REPO_ROOT / "docker-compose.yml"),
        },
        timeout=1800,
        log=docker_logs / "benchmark.log",
    )
    reported = [line for line in done.stdout.splitlines() if line.startswith("report: ")]
    assert reported == [f"report: {runs / 'sample' / 'report.html'}"], done.stdout[-2000:]
    run_dir = Path(running_stack.env["EDITBENCH_RUNS_DIR"]) / "sample"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    micro = summary["overall"]["micro"]
    assert (micro["n_items"], micro["edited"], micro["scored"]) == (12, 12, 12)
    assert (micro["edit_failed"], micro["judge_failed"], micro["unscored"]) == (0, 0, 0)
    assert set(summary["categories"]) == {"color", "removal", "物理"}
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert report.lstrip().lower().startswith("<!doctype html") and "物理" in report
    assert len(list((run_dir / "edits").iterdir())) == 12
    assert {p.stat().st_uid for p in run_dir.rglob("*")} == {os.getuid()}


def test_tiny_models_are_built_into_the_model_cache_volume(running_stack: Compose) -> None:
    for service in SERVICES:
        mounts = json.loads(
            docker("inspect", "--format", "{{json .Mounts}}", running_stack.container_id(service))
        )
        assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [
            ("volume", f"{running_stack.project}_models", "/cache")
        ]
    built = running_stack("exec", "-T", "editor", "ls", "/cache/editbench").stdout.split()
    assert any(name.startswith("tiny-qwen-image-") for name in built)
    assert any(name.startswith("tiny-qwen3-vl-") for name in built)


def test_docker_stop_lets_the_editor_finish_its_edit(running_stack: Compose) -> None:
    """SIGTERM reaches python (exec-form CMD, init) and the drain fits in the grace period."""
    base = url(running_stack, "editor")
    result: dict[str, httpx.Response] = {}
    payload = {
        "image": png(),
        "instruction": "make it blue",
        "num_inference_steps": 2,
        "seed": 7,
        "width": 64,
        "height": 64,
    }

    def edit() -> None:
        result["response"] = httpx.post(f"{base}/v1/edits", json=payload, timeout=600)

    client = threading.Thread(target=edit)
    client.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until a worker has the job, then stop
        workers = httpx.get(f"{base}/v1/info", timeout=10).json()["workers"]
        if any(worker["state"] == "busy" for worker in workers):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the edit never reached a worker")
    running_stack("stop", "editor", timeout=600)
    client.join(timeout=600)

    assert result["response"].status_code == 200
    image = Image.open(io.BytesIO(base64.b64decode(result["response"].json()["image"])))
    assert image.size == (64, 64)
    state = json.loads(
        docker("inspect", "--format", "{{json .State}}", running_stack.container_id("editor"))
    )
    assert state["Status"] == "exited"
    assert not state["OOMKilled"]
    assert state["ExitCode"] != 137  # not SIGKILLed at the end of the grace period
    logs = running_stack("logs", "--no-color", "editor").stdout
    assert "Application shutdown complete" in logs


def test_compose_down_leaves_nothing_running(running_stack: Compose) -> None:
    running_stack("down", timeout=600)
    assert running_stack.leftovers() == {}
    assert running_stack.containers() == []
