"""One GPU for both phases (--share-gpu) against both real services on tiny CPU models.

The services run in uvicorn processes of their own and really release and load their models
(POST /v1/model/release and /v1/model/load). Which service held its model while the other worked
is read from their /ready at the moment each job finished, not inferred from timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.config import RunSettings, resolve_settings
from orchestrator.phases import ServiceNotReady
from orchestrator.runner import RunOutcome, run_benchmark
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.support.images import image_bytes
from tests.support.servers import REPO_ROOT, REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny


@dataclass(frozen=True, slots=True)
class Services:
    editor: str
    reward: str


def ready_state(url: str) -> str:
    """``loaded`` (/ready 200), ``released`` (503 saying so) or the 503's detail."""
    answer = httpx.get(f"{url}/ready", timeout=10)
    if answer.status_code == 200:
        return "loaded"
    message = str(answer.json()["error"]["message"])
    return "released" if "released" in message else message


def post(url: str, path: str) -> dict[str, Any]:
    answer = httpx.post(f"{url}{path}", timeout=300)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def editor_tiny(model_cache: Path) -> dict[str, str]:
    return {
        "EDITOR_MODEL": "tiny",
        "EDITOR_DEVICES": "cpu",
        "EDITOR_CACHE_DIR": str(model_cache),
        **REUSE_FREED_MEMORY,
    }


def judge_tiny(model_cache: Path, **extra: str) -> dict[str, str]:
    return {
        "REWARD_MODEL": "tiny",
        "REWARD_DEVICES": "cpu",
        "REWARD_CACHE_DIR": str(model_cache),
        **REUSE_FREED_MEMORY,
        **extra,
    }


@pytest.fixture(scope="module")
def services(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Editor and judge, both loaded at start (on a GPU they would not fit together)."""
    logs = tmp_path_factory.mktemp("share-gpu-services")
    editor = ServiceProcess("editor_service", editor_tiny(model_cache), logs / "editor.log")
    reward = ServiceProcess("reward_service", judge_tiny(model_cache), logs / "reward.log")
    editor.start()
    reward.start()
    try:
        editor.wait_ready()
        reward.wait_ready()
        yield Services(editor.url, reward.url)
    finally:
        editor.stop()
        reward.stop()


@pytest.fixture
def both_loaded(services: Services) -> Services:
    """Whatever an earlier test left released is loaded again (both fit on the CPU)."""
    for url in (services.editor, services.reward):
        post(url, "/v1/model/load")
        assert ready_state(url) == "loaded"
    return services


@dataclass
class ObservingProgress:
    """A progress view that, as each job finishes, asks both services whether they are loaded."""

    editor: str
    reward: str
    phase: str = ""
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def start(self, phase: str, total: int) -> None:
        self.phase = phase

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None:
        if not skipped:
            # Blocking the run's event loop for two local GETs is what makes this "at the moment".
            self.seen.append((self.phase, ready_state(self.editor), ready_state(self.reward)))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def finish(self) -> None:
        pass


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """Four items in two categories, 32x32 sources (small images keep tiny edits quick)."""
    rows = [
        {"id": f"{category}-{i}", "category": category, "instruction": f"{category} edit {i}"}
        for i in range(2)
        for category in ("color", "物理")
    ]
    return write_manifest(tmp_path / "bench", rows)


def settings_for(services: Services, out: Path, **changes: Any) -> RunSettings:
    return resolve_settings(
        {
            "out": out,
            "editor_url": services.editor,
            "reward_url": services.reward,
            "steps": 2,
            "width": 32,
            "height": 32,
            "share_gpu": True,
            "ready_timeout_s": 120,
            **changes,
        },
        environ={},
    )


def run(settings: RunSettings, progress: ObservingProgress) -> RunOutcome:
    return asyncio.run(run_benchmark(settings, progress))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_share_gpu_releases_the_judge_during_edits_and_the_editor_during_scores(
    both_loaded: Services, bench: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    progress = ObservingProgress(both_loaded.editor, both_loaded.reward)
    outcome = run(settings_for(both_loaded, out, benchmark=str(bench), limit=2), progress)

    assert [phase for phase, _, _ in progress.seen] == ["edit"] * 2 + ["score"] * 2
    assert {(e, r) for phase, e, r in progress.seen if phase == "edit"} == {("loaded", "released")}
    assert {(e, r) for phase, e, r in progress.seen if phase == "score"} == {("released", "loaded")}
    assert (ready_state(both_loaded.editor), ready_state(both_loaded.reward)) == (
        "released",
        "loaded",
    )

    # The editor was loaded already: its hand-over only released the judge.
    first, second = outcome.handovers
    assert (first.source, first.target, first.released, first.loaded) == (
        "reward",
        "editor",
        True,
        None,
    )
    assert first.release_s is not None and first.load_s is None
    assert (second.source, second.target, second.released, second.loaded) == (
        "editor",
        "reward",
        True,
        True,
    )
    assert second.release_s is not None and second.load_s is not None
    assert second.wall_s >= second.release_s + second.load_s
    assert any("GPU hand-over editor -> reward" in note for note in progress.notes)

    summary = read_json(out / "summary.json")
    assert [(h["from"], h["to"]) for h in summary["handovers"]] == [
        ("reward", "editor"),
        ("editor", "reward"),
    ]
    assert summary["handovers"][1]["load_s"] == round(second.load_s, 3)
    assert all(h["invocation"] == 0 and h["wall_s"] > 0 for h in summary["handovers"])
    assert summary["overall"]["micro"]["scored"] == 2
    assert set(summary["categories"]) == {"color", "物理"}
    results = JsonlLog(out / "results.jsonl").read()
    assert len(results) == 2
    assert all(r["edit_status"] == "ok" and r["scored"] for r in results)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "GPU hand-overs" in html and "2 hand-over(s) in all" in html


def editbench(*args: str) -> tuple[int, str, str]:
    process = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDITBENCH_")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return process.returncode, process.stdout, process.stderr


def test_a_resumed_share_gpu_run_appends_its_handovers_and_one_with_nothing_to_do_adds_none(
    both_loaded: Services, bench: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = settings_for(both_loaded, out, benchmark=str(bench), limit=1)
    run(first, ObservingProgress(both_loaded.editor, both_loaded.reward))
    assert len(read_json(out / "summary.json")["handovers"]) == 2

    # Everything is done: neither phase has a job, so neither service is asked for anything.
    again = ObservingProgress(both_loaded.editor, both_loaded.reward)
    assert run(first, again).handovers == []
    assert again.seen == []
    assert len(read_json(out / "summary.json")["handovers"]) == 2
    assert (ready_state(both_loaded.editor), ready_state(both_loaded.reward)) == (
        "released",
        "loaded",
    )

    # One more item, from the command line (EDITBENCH_SHARE_GPU would do as well).
    code, stdout, stderr = editbench(
        "run",
        "--resume",
        "--out",
        str(out),
        "--limit",
        "2",
        "--editor-url",
        both_loaded.editor,
        "--reward-url",
        both_loaded.reward,
        "--share-gpu",
    )
    assert code == 0, stderr
    assert "GPU hand-over reward -> editor: release" in stdout
    assert "GPU hand-over editor -> reward: release" in stdout
    assert "GPU hand-overs: 2," in stdout

    summary = read_json(out / "summary.json")
    handovers = summary["handovers"]
    assert [(h["from"], h["to"], h["invocation"]) for h in handovers] == [
        ("reward", "editor", 0),
        ("editor", "reward", 0),
        ("reward", "editor", 2),
        ("editor", "reward", 2),
    ]
    # This time the editor had been released: its hand-over loaded it again.
    assert handovers[2]["release_s"] is not None and handovers[2]["load_s"] is not None
    assert summary["overall"]["micro"]["scored"] == 2
    assert "4 hand-over(s) in all" in (out / "report.html").read_text(encoding="utf-8")
    provenance = read_json(out / "provenance.json")
    assert provenance["handovers"] == handovers


def wait_released(service: ServiceProcess, timeout_s: float = 180.0) -> None:
    """A service started with *_LOAD_ON_START=false: up, and /ready says it is released."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert service.process is not None and service.process.poll() is None, service.log()
        try:
            if ready_state(service.url) == "released":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{service.module} not up after {timeout_s}s:\n{service.log()}")


def test_a_score_phase_loads_a_judge_started_released(
    both_loaded: Services, model_cache: Path, tmp_path: Path
) -> None:
    judge = ServiceProcess(
        "reward_service",
        judge_tiny(model_cache, REWARD_LOAD_ON_START="false"),
        tmp_path / "released-judge.log",
    )
    rows = [{"id": f"item-{i}", "category": "color", "instruction": f"edit {i}"} for i in range(2)]
    manifest = write_manifest(tmp_path / "bench", rows)
    edited = tmp_path / "edited"
    edited.mkdir()
    for i in range(2):
        (edited / f"item-{i}.png").write_bytes(image_bytes(32, 32, seed=100 + i))
    services = Services(both_loaded.editor, judge.url)
    judge.start()
    try:
        wait_released(judge)
        score_only = {"benchmark": str(manifest), "phase": "score", "edited_dir": str(edited)}

        # Without --share-gpu a released judge is an error at once, not a wait for /ready.
        with pytest.raises(ServiceNotReady, match="--share-gpu"):
            run(
                settings_for(services, tmp_path / "refused", share_gpu=False, **score_only),
                ObservingProgress(services.editor, services.reward),
            )

        out = tmp_path / "run"
        progress = ObservingProgress(services.editor, services.reward)
        outcome = run(settings_for(services, out, **score_only), progress)
        assert ready_state(judge.url) == "loaded"
    finally:
        judge.stop()

    assert {(e, r) for _, e, r in progress.seen} == {("released", "loaded")}
    assert len(progress.seen) == 2
    (handover,) = outcome.handovers
    assert (handover.source, handover.target, handover.released, handover.loaded) == (
        "editor",
        "reward",
        True,
        True,
    )
    summary = read_json(out / "summary.json")
    assert summary["handovers"][0]["load_s"] is not None
    assert summary["overall"]["micro"]["scored"] == 2
    # The judge's identity came from the model it loaded, not from before.
    assert summary["models"]["judge"][0].startswith("tiny@")
