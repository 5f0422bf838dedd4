"""A client that goes away: its queued job is dropped and its running job stops early.

Needs a real server (in-process ASGI transports never signal a disconnect).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess

FAKE = "tests.support.fake_editors:MirrorEditBackend"


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def worker_states(url: str) -> list[str]:
    return [w["state"] for w in httpx.get(f"{url}/v1/info", timeout=10).json()["workers"]]


def test_disconnected_clients_jobs_are_dropped_or_stopped(tmp_path: Path) -> None:
    env = {
        "EDITOR_BACKEND": FAKE,
        "EDITOR_DEVICES": "cpu",
        "EDITOR_CACHE_DIR": str(tmp_path),
        "EDITOR_BACKEND_OPTIONS": json.dumps({"step_delay_s": 0.5}),
    }
    payload = {"image": b64(image_bytes(16, 16)), "instruction": "x", "num_inference_steps": 40}
    with ServiceProcess("editor_service", env, tmp_path / "editor.log").running() as editor:
        # One job runs (40 steps of 0.5 s: 20 s), one waits; both clients give up after 2 s.
        async def give_up() -> list[BaseException | httpx.Response]:
            async with httpx.AsyncClient(timeout=2) as client:
                posts = (client.post(f"{editor.url}/v1/edits", json=payload) for _ in range(2))
                return await asyncio.gather(*posts, return_exceptions=True)

        outcomes = asyncio.run(give_up())
        assert all(isinstance(o, httpx.ReadTimeout) for o in outcomes), outcomes
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if metric(editor.url, 'editor_jobs_total{outcome="cancelled"}') == 1:
                break
            time.sleep(0.2)
        assert metric(editor.url, "editor_client_disconnects_total") == 2
        assert metric(editor.url, 'editor_jobs_total{outcome="cancelled"}') == 1
        assert metric(editor.url, 'editor_jobs_total{outcome="ok"}') == 0
        assert metric(editor.url, "editor_queue_depth") == 0
        # Counted as 499 (client closed request), not logged as a server error.
        gone = 'editor_http_requests_total{method="POST",route="/v1/edits",status="499"}'
        assert metric(editor.url, gone) == 2
        assert "Exception in ASGI application" not in (tmp_path / "editor.log").read_text()
        # The worker is free again well before the 20 s job would have ended (its state says
        # so, within 10 s of the cancellation), and serves the next job (2 steps of 0.5 s).
        deadline = time.monotonic() + 10
        while worker_states(editor.url) != ["ready"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker_states(editor.url) == ["ready"]
        quick = {**payload, "num_inference_steps": 2}
        assert httpx.post(f"{editor.url}/v1/edits", json=quick, timeout=30).status_code == 200
