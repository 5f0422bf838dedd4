"""``editbench`` as a user runs it (a subprocess), against real services whose jobs can be held.

``held_services`` starts both services on their tiny models behind the holds of
``tests.orchestrator.held_backends``: a test puts ``[edit-hold:NAME]`` or ``[score-hold:NAME]`` in
an item's instruction, waits until the service reports the job held, interrupts or kills the CLI
there, and opens the gate afterwards. No timing decides where an interrupt lands.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.orchestrator.held_backends import holding, read_journal
from tests.support.servers import REPO_ROOT, REUSE_FREED_MEMORY, ServiceProcess


@dataclass(frozen=True, slots=True)
class HeldServices:
    editor: str
    reward: str
    gate_dir: Path
    journal: Path

    def open_gate(self, name: str) -> None:
        (self.gate_dir / name).touch()

    def events(self, service: str | None = None) -> list[dict[str, Any]]:
        return [e for e in read_journal(self.journal) if service in (None, e["service"])]

    def holding(self) -> set[str]:
        """The holds a job is waiting on now (held, gate still closed)."""
        return holding(self.journal, self.gate_dir)

    def wait_held(self, process: subprocess.Popen[str]) -> set[str]:
        """Wait until a job is held (while ``process`` runs); the holds it waits on."""
        wait_for(lambda: bool(self.holding()), "a job held at a service", process)
        return self.holding()


def held_env(service: str, model_cache: Path, gate_dir: Path, journal: Path) -> dict[str, str]:
    """The environment of ``editor_service`` or ``reward_service`` on its tiny model, with holds."""
    prefix, backend = {
        "editor_service": ("EDITOR", "HeldEditBackend"),
        "reward_service": ("REWARD", "HeldJudgeBackend"),
    }[service]
    return {
        f"{prefix}_MODEL": "tiny",
        f"{prefix}_DEVICES": "cpu",
        f"{prefix}_CACHE_DIR": str(model_cache),
        **REUSE_FREED_MEMORY,
        f"{prefix}_BACKEND": f"tests.orchestrator.held_backends:{backend}",
        f"{prefix}_BACKEND_OPTIONS": json.dumps(
            {"gate_dir": str(gate_dir), "journal": str(journal)}
        ),
    }


@contextlib.contextmanager
def held_services(model_cache: Path, folder: Path) -> Iterator[HeldServices]:
    """Editor and judge on their tiny models, in processes of their own, with holds."""
    gate_dir = folder / "gates"
    gate_dir.mkdir(parents=True)
    journal = folder / "journal.jsonl"
    editor, reward = (
        ServiceProcess(name, held_env(name, model_cache, gate_dir, journal), folder / f"{name}.log")
        for name in ("editor_service", "reward_service")
    )
    editor.start()
    reward.start()
    try:
        editor.wait_ready()
        reward.wait_ready()
        yield HeldServices(editor.url, reward.url, gate_dir, journal)
    finally:
        # Whatever a failed test left held must not keep a worker from stopping.
        for name in {e["hold"] for e in read_journal(journal) if e["hold"]}:
            (gate_dir / name).touch()
        editor.stop()
        reward.stop()


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


def wait_for(
    condition: Callable[[], bool],
    what: str,
    process: subprocess.Popen[str] | None = None,
    timeout_s: float = 300,
    interval_s: float = 0.02,
) -> None:
    """Poll ``condition``; fail (with the CLI's stderr) if ``process`` exits first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"editbench exited ({process.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s}s")
        time.sleep(interval_s)


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


def editor_idle(url: str) -> bool:
    info = httpx.get(f"{url}/v1/info", timeout=10).json()
    return bool(info["queue_depth"] == 0 and all(w["state"] != "busy" for w in info["workers"]))


def wait_editor_idle(url: str) -> None:
    """An interrupted client's last edit may still be running: wait until no worker is busy."""
    wait_for(lambda: editor_idle(url), "idle editor", timeout_s=120, interval_s=0.2)
