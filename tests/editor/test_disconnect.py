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
        # One job runs (40 steps of 0.5 s: 20 s), one waits; then both clients give up. (They
        # used to give up after a 2 s client timeout, which a loaded machine could reach before
        # the first job had started: nothing running to stop.)
        async def give_up() -> list[BaseException | httpx.Response]:
            async with httpx.AsyncClient(base_url=editor.url, timeout=60) as client:
                posts = [
                    asyncio.create_task(client.post("/v1/edits", json=payload)) for _ in range(2)
                ]
                deadline = time.monotonic() + 60
                while True:
                    info = (await client.get("/v1/info")).json()
                    if [w["state"] for w in info["workers"]] == ["busy"] and info[
                        "queue_depth"
                    ] == 1:
                        break
                    assert time.monotonic() < deadline, info
                    await asyncio.sleep(0.05)
                for post in posts:
                    post.cancel()
                return await asyncio.gather(*posts, return_exceptions=True)

        outcomes = asyncio.run(give_up())
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
        # Until both disconnects are seen and the running job has stopped.
        gone = 'editor_http_requests_total{method="POST",route="/v1/edits",status="499"}'
        settled = {
            "editor_client_disconnects_total": 2,
            'editor_jobs_total{outcome="cancelled"}': 1,
            gone: 2,
        }
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(metric(editor.url, name) == value for name, value in settled.items()):
                break
            time.sleep(0.2)
        assert metric(editor.url, "editor_client_disconnects_total") == 2
        assert metric(editor.url, 'editor_jobs_total{outcome="cancelled"}') == 1
        assert metric(editor.url, 'editor_jobs_total{outcome="ok"}') == 0
        assert metric(editor.url, "editor_queue_depth") == 0
        # Counted as 499 (client closed request), not logged as a server error.
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
