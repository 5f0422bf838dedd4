"""The offline demo: both services on tiny models, the sample benchmark, the report.

``python -m orchestrator.demo`` (or ``editbench demo``) starts ``python -m editor_service`` and
``python -m reward_service`` from this interpreter's environment as child processes on free local
ports, with tiny random-weight models built locally (no download), waits for /ready, runs
``editbench run --benchmark sample`` into ./runs/demo, and always stops both services, also on
Ctrl-C or failure. The tiny models judge nothing meaningful: the demo shows the machinery, not a
result. Rerunning it resumes the same run folder.
"""

from __future__ import annotations

import argparse
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

from orchestrator.terminal import SafeConsole

_out = SafeConsole(highlight=False)
_err = SafeConsole(highlight=False, stderr=True)


def _say(message: str, *, err: bool = False) -> None:
    (_err if err else _out).print(message, markup=False, soft_wrap=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One service as a child process in its own session (Ctrl-C reaches us, not it)."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module = module
        self.port = free_port()
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", str(self.port)],
                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.module} exited ({self.process.returncode}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        return False

    def stop(self, grace_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@contextlib.contextmanager
def running(services: list[Service], ready_timeout_s: float) -> Iterator[None]:
    try:
        for service in services:
            service.start()
            _say(f"started {service.module} at {service.url} (log: {service.log})")
        deadline = time.monotonic() + ready_timeout_s
        waiting = list(services)
        while waiting:
            waiting = [s for s in waiting if not s.ready()]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(
                    f"not ready after {ready_timeout_s:.0f} s: "
                    + ", ".join(s.module for s in waiting)
                )
            time.sleep(0.5)
        _say("both services are ready (tiny random-weight models)")
        yield
    finally:
        for service in services:
            service.stop()
        _say("services stopped")


def _prefixed(prefix: str, values: dict[str, str]) -> dict[str, str]:
    return {prefix + key: value for key, value in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", default="64x64", help="output size (default: 64x64)")
    parser.add_argument(
        "--per-category", type=int, default=None, help="at most N sample items per category"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the services build their tiny models (default: their own, ~/.cache/editbench)",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=900.0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    logs = out / "logs"
    cache = {"CACHE_DIR": str(Path(args.cache_dir).resolve())} if args.cache_dir else {}
    editor = Service(
        "editor_service",
        {"EDITOR_MODEL": "tiny", "EDITOR_DEVICES": "cpu", **_prefixed("EDITOR_", cache)},
        logs / "editor.log",
    )
    reward = Service(
        "reward_service",
        {"REWARD_MODEL": "tiny", "REWARD_DEVICES": "cpu", **_prefixed("REWARD_", cache)},
        logs / "reward.log",
    )
    command = [
        sys.executable,
        "-m",
        "orchestrator",
        "run",
        "--benchmark",
        "sample",
        "--out",
        str(out),
        "--editor-url",
        editor.url,
        "--reward-url",
        reward.url,
        "--steps",
        str(args.steps),
        "--size",
        args.size,
    ]
    if args.per_category:
        command += ["--limit-per-category", str(args.per_category)]
    started = time.monotonic()
    try:
        with running([editor, reward], args.ready_timeout_s):
            _say("$ editbench " + " ".join(command[3:]))
            code = subprocess.call(command)
    except KeyboardInterrupt:
        _say(f"interrupted; continue with: python -m orchestrator.demo --out {out}")
        return 130
    except (RuntimeError, TimeoutError) as exc:
        _say(f"demo failed: {exc}", err=True)
        return 1
    _say(f"demo finished in {time.monotonic() - started:.0f} s (exit {code})")
    if code == 0:
        _say(f"open {(out / 'report.html').resolve()}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
