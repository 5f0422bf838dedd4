"""Load test: many concurrent clients against both services; every request must end served.

    # Starts both services on the tiny models (CPU), 1000 concurrent scores then 200 concurrent
    # edits, prints one JSON document and keeps it in a file:
    python bench/load_test.py --out load.json
    # Against running services (memory is measured only for the pids you name):
    python bench/load_test.py --editor-url http://gpu:8001 --reward-url http://gpu:8002
    # The same burst four times against the same judge: memory levels off or keeps growing:
    python bench/load_test.py --edits 0 --scores 1000 --rounds 4

Every client sends its request once, all at the same moment (per phase). A 429 or 503 is
retried after the Retry-After the service sent (plus up to 0.5 s of jitter, so a thousand refused
clients do not come back in the same millisecond); anything else that is not a 2xx, or a
connection that fails, is an error, and the expected count of errors is zero. Latency is per
request, from its first send to its final answer, retries and waits included. Memory is the
resident set of each service's process tree (API process and workers) before and after (and
before the one warm-up request that each phase sends first, not counted).

This is a script to run on purpose, not a test: a phase takes minutes on a small CPU machine.
Requests go to the given URLs only (by default, services it started on 127.0.0.1); every client
gives up after --max-attempts tries or --time-limit-s seconds, so the run always ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RETRYABLE = {429, 503}


def png_b64(side: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --- memory of a process tree (Linux /proc) ----------------------------------------------------


def tree_rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` and every process below it (None off Linux or unknown pid)."""
    if pid is None or not Path(f"/proc/{pid}").exists():
        return None
    pids, total_kib = [pid], 0
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


# --- services -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None


@contextlib.contextmanager
def started(module: str, env: dict[str, str], log: Path) -> Iterator[Service]:
    """``python -m <module>`` on a free loopback port, until it answers /ready; SIGTERM after."""
    port = free_port()
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **env,
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    service = Service(f"http://127.0.0.1:{port}", process.pid, process)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{module} exited early; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{service.url}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"{module} not ready after 600 s; see {log}")
        yield service
    finally:
        process.terminate()
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- one phase ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    requests: int
    served: int = 0
    retried_429: int = 0
    retried_503: int = 0
    waited_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)

        return {
            "requests": self.requests,
            "served": self.served,
            "retried_429": self.retried_429,
            "retried_503": self.retried_503,
            "retry_wait_s_total": round(self.waited_s, 1),
            "errors": len(self.errors),
            "error_samples": self.errors[:10],
            "latency_s": {
                "p50": pct(0.50),
                "p99": pct(0.99),
                "max": round(lat[-1], 3) if lat else None,
                "mean": round(statistics.fmean(lat), 3) if lat else None,
            },
        }


async def one_client(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    phase: Phase,
    rng: random.Random,
    max_attempts: int,
    deadline: float,
) -> None:
    started_at = time.monotonic()
    for _ in range(max_attempts):
        try:
            response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            phase.errors.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code in RETRYABLE:
            if response.status_code == 429:
                phase.retried_429 += 1
            else:
                phase.retried_503 += 1
            wait = float(response.headers.get("retry-after", "1")) + rng.uniform(0, 0.5)
            if time.monotonic() + wait > deadline:
                phase.errors.append(f"gave up: time limit reached after {response.status_code}")
                return
            phase.waited_s += wait
            await asyncio.sleep(wait)
            continue
        if 200 <= response.status_code < 300:
            phase.served += 1
            phase.latencies.append(time.monotonic() - started_at)
        else:
            phase.errors.append(f"{response.status_code}: {response.text[:200]}")
        return
    phase.errors.append(f"gave up after {max_attempts} attempts")


async def run_phase(
    name: str,
    url: str,
    body: dict[str, Any],
    count: int,
    args: argparse.Namespace,
    pid: int | None,
) -> dict[str, Any]:
    phase = Phase(name, count)
    rss_at_start = tree_rss_mb(pid)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    timeout = httpx.Timeout(args.request_timeout_s, connect=60)
    async with httpx.AsyncClient(timeout=timeout) as warm:  # first use: lazy imports, caches
        warmed = await warm.post(url, json=body)
        warmed.raise_for_status()
    rss_before = tree_rss_mb(pid)
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.time_limit_s
    progress(f"{name}: {count} concurrent requests to {url}")
    started_at = time.monotonic()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        await asyncio.gather(
            *(
                one_client(client, url, body, phase, rng, args.max_attempts, deadline)
                for _ in range(count)
            )
        )
    wall_s = time.monotonic() - started_at
    summary = phase.summary()
    summary.update(
        wall_s=round(wall_s, 1),
        served_per_s=round(phase.served / wall_s, 2) if wall_s else None,
        rss_mb={
            "at_start": rss_at_start,
            "before": rss_before,  # after one warm-up request, not counted above
            "after": tree_rss_mb(pid),
        },
    )
    progress(f"{name}: {phase.served}/{count} served, {len(phase.errors)} errors, {wall_s:.0f}s")
    return summary


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--editor-url", help="a running editor; default: start one (tiny model)")
    parser.add_argument("--reward-url", help="a running judge; default: start one (tiny model)")
    parser.add_argument("--editor-pid", type=int, help="its API process, to measure memory")
    parser.add_argument("--reward-pid", type=int, help="its API process, to measure memory")
    parser.add_argument("--scores", type=int, default=1000, help="concurrent score requests")
    parser.add_argument("--edits", type=int, default=200, help="concurrent edit requests")
    parser.add_argument("--editor-devices", default="cpu,cpu", help="workers of a started editor")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per edit")
    parser.add_argument("--edit-side", type=int, default=32, help="output side of an edit")
    parser.add_argument(
        "--rounds", type=int, default=1, help="bursts per phase, one after another (memory)"
    )
    parser.add_argument("--max-attempts", type=int, default=1000)
    parser.add_argument("--time-limit-s", type=float, default=3600.0, help="per phase")
    parser.add_argument("--request-timeout-s", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def score_body(args: argparse.Namespace) -> dict[str, Any]:
    item = {
        "source_image": png_b64(args.side, 1),
        "edited_image": png_b64(args.side, 2),
        "instruction": "make the sky red",
    }
    return {"items": [item], "protocol": "single", "mode": "expected"}


def edit_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "image": png_b64(args.side, 3),
        "instruction": "make the sky red",
        "num_inference_steps": args.steps,
        "width": args.edit_side,
        "height": args.edit_side,
        "seed": 1,
    }


async def measure(
    args: argparse.Namespace, editor: Service | None, reward: Service | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    phases = []
    if reward is not None and args.scores:
        phases.append(("scores", reward, "/v1/scores", score_body(args), args.scores))
    if editor is not None and args.edits:
        phases.append(("edits", editor, "/v1/edits", edit_body(args), args.edits))
    errors = 0
    for name, service, path, body, count in phases:
        rounds = []
        for _ in range(args.rounds):  # the same burst again: a leak grows every round
            rounds.append(await run_phase(name, service.url + path, body, count, args, service.pid))
            errors += rounds[-1]["errors"]
        result[name] = rounds[0]
        if len(rounds) > 1:
            result[name]["later_rounds"] = rounds[1:]
        info = httpx.get(f"{service.url}/v1/info", timeout=10).json()
        info.pop("protocols", None)
        result[name]["service_info"] = info
    result["errors_total"] = errors
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-test-")))
        cache = str(Path.home() / ".cache" / "editbench")
        editor = reward = None
        if args.edits:
            if args.editor_url:
                editor = Service(args.editor_url, args.editor_pid)
            else:
                progress("starting the editor (tiny model)")
                env = {
                    "EDITOR_MODEL": "tiny",
                    "EDITOR_DEVICES": args.editor_devices,
                    "EDITOR_CACHE_DIR": cache,
                    "EDITOR_LOG_LEVEL": "warning",
                }
                editor = stack.enter_context(started("editor_service", env, logs / "editor.log"))
        if args.scores:
            if args.reward_url:
                reward = Service(args.reward_url, args.reward_pid)
            else:
                progress("starting the judge (tiny model)")
                env = {
                    "REWARD_MODEL": "tiny",
                    "REWARD_DEVICES": "cpu",
                    "REWARD_CACHE_DIR": cache,
                    "REWARD_LOG_LEVEL": "warning",
                }
                reward = stack.enter_context(started("reward_service", env, logs / "reward.log"))
        result = asyncio.run(measure(args, editor, reward))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["errors_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
