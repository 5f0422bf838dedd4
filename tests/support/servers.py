"""Real service processes for end-to-end tests: ``python -m <service>`` under uvicorn.

``ServiceProcess`` starts a service on a free port with the given environment, waits for /ready,
and stops it with SIGTERM (then SIGKILL). Its log is kept in a file and printed when a start fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


# Fresh memory faults in slowly on the test machines (the first 400 MB of a process: ~7 s), and
# glibc hands every freed block over 32 MiB back to the kernel, so each tiny edit faulted its
# ~1 MP activations in again. Services on the tiny models keep freed memory for reuse instead:
# a tiny edit takes 2.1 s, not 3.0 s (same math, same pixels). Not for tests that watch RSS.
REUSE_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**34), "MALLOC_TRIM_THRESHOLD_": str(2**34)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_env(**extra: str) -> dict[str, str]:
    """The environment of a child service: no hub access, repo root importable (test backends)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


class ServiceProcess:
    def __init__(
        self,
        module: str,
        env: dict[str, str],
        log_path: Path,
        *,
        args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.module = module
        self.port = port or free_port()
        self.env = offline_env(**env)
        self.args = args or []
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"{self.module} not ready after {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def running(self, ready_timeout_s: float = 180.0) -> Iterator[ServiceProcess]:
        self.start()
        try:
            self.wait_ready(ready_timeout_s)
            yield self
        finally:
            self.stop()
