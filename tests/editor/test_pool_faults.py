"""Queueing, readiness and faults of the worker pool: real worker processes, fake model.

These tests are about the pool, not the model, so the workers run a fake backend (the backend seam).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from editor_service.app import create_app
from editor_service.config import EditorSettings
from shared_schemas import EditorInfo, ErrorResponse
from tests.support.images import b64, image_bytes

pytestmark = pytest.mark.anyio

FAKE = "tests.support.fake_editors:MirrorEditBackend"
SOURCE = b64(image_bytes(32, 32))


def settings(tmp_path: Path, **changes: Any) -> EditorSettings:
    options = changes.pop("backend_options", {})
    return EditorSettings(
        backend=FAKE,
        devices=changes.pop("devices", ["cpu"]),
        cache_dir=tmp_path,
        backend_options=options,
        **changes,
    )


def payload(instruction: str = "mirror", steps: int = 2) -> dict[str, Any]:
    return {"image": SOURCE, "instruction": instruction, "num_inference_steps": steps, "seed": 1}


async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://editor") as client:
            yield client


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError((await client.get("/ready")).text)


async def test_ready_is_503_until_every_worker_has_loaded(tmp_path: Path) -> None:
    app = create_app(
        settings(tmp_path, devices=["cpu", "cpu"], backend_options={"load_delay_s": 3})
    )
    async for client in client_for(app):
        early = await client.get("/ready")
        assert early.status_code == 503
        assert ErrorResponse.model_validate(early.json()).error.type == "not_ready"
        refused = await client.post("/v1/edits", json=payload())
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        await wait_ready(client)
        assert (await client.post("/v1/edits", json=payload())).status_code == 200


async def test_edit_returns_429_with_retry_after_when_queue_is_full(tmp_path: Path) -> None:
    gate = tmp_path / "open"
    app = create_app(settings(tmp_path, queue_capacity=1, backend_options={"edit_gate": str(gate)}))
    async for client in client_for(app):
        await wait_ready(client)
        # The one worker holds the first edit at the gate and the queue holds the second, so the
        # queue is full however long each request takes to arrive (four at once, with a timed
        # edit, let a late one in after the first had ended: CI saw 200, 200, 200, 429).
        running = asyncio.create_task(client.post("/v1/edits", json=payload("first")))
        info = await info_when(client, lambda info: info.workers[0].state == "busy")
        assert info.workers[0].state == "busy"
        queued = asyncio.create_task(client.post("/v1/edits", json=payload("second")))
        info = await info_when(client, lambda info: info.queue_depth == 1)
        assert info.queue_depth == 1
        refused = await asyncio.gather(
            *(client.post("/v1/edits", json=payload(f"late {n}")) for n in range(2))
        )
        gate.touch()
        accepted = await asyncio.gather(running, queued)
        assert [r.status_code for r in refused] == [429, 429]
        assert [r.status_code for r in accepted] == [200, 200]
        for answer in refused:
            assert int(answer.headers["Retry-After"]) >= 1
            assert ErrorResponse.model_validate(answer.json()).error.type == "queue_full"
        metrics = (await client.get("/metrics")).text
        assert 'editor_rejected_total{reason="queue_full"} 2.0' in metrics


async def info_when(
    client: httpx.AsyncClient, done: Callable[[EditorInfo], bool], timeout_s: float = 60
) -> EditorInfo:
    """/v1/info once ``done`` holds for it, or the last one after ``timeout_s`` (the caller
    asserts). The workers are processes of their own: spawning one, and restarting it with
    backoff, took 1-2 s of an idle machine; the old bounds (100 polls of 0.1 s) were 10 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = EditorInfo.model_validate((await client.get("/v1/info")).json())
        if done(info) or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.1)


async def wait_settled(client: httpx.AsyncClient, timeout_s: float = 60) -> EditorInfo:
    """Until nothing is queued or running: a job started late would show as busy first."""
    for _ in range(int(timeout_s / 0.1)):
        info = EditorInfo.model_validate((await client.get("/v1/info")).json())
        if info.queue_depth == 0 and all(w.state == "ready" for w in info.workers):
            return info
        await asyncio.sleep(0.1)
    raise TimeoutError((await client.get("/v1/info")).text)


async def test_job_that_waits_past_its_deadline_gets_504_and_never_runs(tmp_path: Path) -> None:
    starts = tmp_path / "starts.log"
    options = {"edit_delay_s": 3.0, "start_log": str(starts)}
    app = create_app(settings(tmp_path, request_timeout_s=1.0, backend_options=options))
    async for client in client_for(app):
        await wait_ready(client)
        first, second = await asyncio.gather(
            client.post("/v1/edits", json=payload("first")),
            client.post("/v1/edits", json=payload("second")),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 504]
        late = first if first.status_code == 504 else second
        assert ErrorResponse.model_validate(late.json()).error.type == "deadline_exceeded"
        info = await wait_settled(client)
        assert [w.jobs_done for w in info.workers] == [1]
        # Only the job that was answered 200 ever reached the model.
        answered = "first" if first.status_code == 200 else "second"
        assert starts.read_text().split() == [answered]
        metrics = (await client.get("/metrics")).text
        assert 'editor_jobs_total{outcome="ok"} 1.0' in metrics
        assert 'editor_rejected_total{reason="deadline"} 1.0' in metrics


async def test_killed_worker_fails_only_its_job_and_comes_back(tmp_path: Path) -> None:
    gate = tmp_path / "open"
    app = create_app(
        settings(tmp_path, devices=["cpu", "cpu"], backend_options={"edit_gate": str(gate)})
    )
    async for client in client_for(app):
        await wait_ready(client)
        info = EditorInfo.model_validate((await client.get("/v1/info")).json())
        victim = info.workers[0].pid
        assert victim is not None
        # Two jobs held at the gate, one per worker; the kill lands once both run, and the
        # survivor's job ends only after it (timed jobs, 4 s, could both end before a late kill).
        jobs = [asyncio.create_task(client.post("/v1/edits", json=payload())) for _ in range(2)]
        info = await info_when(client, lambda info: [w.state for w in info.workers] == ["busy"] * 2)
        assert [w.state for w in info.workers] == ["busy", "busy"]
        os.kill(victim, signal.SIGKILL)
        died = await next(asyncio.as_completed(jobs))  # the victim's, while the other is held
        assert died.status_code == 503, died.text
        gate.touch()
        responses = await asyncio.gather(*jobs)
        assert sorted(r.status_code for r in responses) == [200, 503]
        died = next(r for r in responses if r.status_code == 503)
        assert ErrorResponse.model_validate(died.json()).error.type == "worker_died"
        await wait_ready(client)
        info = await info_when(client, lambda info: info.workers[0].state == "ready")
        assert info.workers[0].restarts == 1 and info.workers[0].pid != victim
        fast = await asyncio.gather(
            *(client.post("/v1/edits", json=payload(steps=2)) for _ in range(4))
        )
        assert [r.status_code for r in fast] == [200] * 4


async def test_out_of_memory_and_model_errors_fail_the_job_and_the_worker_keeps_serving(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path))
    async for client in client_for(app):
        await wait_ready(client)
        oom = await client.post("/v1/edits", json=payload("oom"))
        assert oom.status_code == 507
        assert ErrorResponse.model_validate(oom.json()).error.type == "out_of_memory"
        crash = await client.post("/v1/edits", json=payload("crash"))
        assert crash.status_code == 500
        error = ErrorResponse.model_validate(crash.json()).error
        assert error.type == "backend_error" and "fake crash" not in error.message
        assert (await client.post("/v1/edits", json=payload())).status_code == 200
        info = EditorInfo.model_validate((await client.get("/v1/info")).json())
        assert info.workers[0].restarts == 0


async def test_worker_that_cannot_load_makes_the_service_not_ready(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, max_worker_restarts=1, backend_options={"fail_load": True}))
    async for client in client_for(app):
        info = await info_when(client, lambda info: info.workers[0].state == "failed")
        assert info.workers[0].state == "failed"
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "failing" in ErrorResponse.model_validate(ready.json()).error.message


async def test_release_and_load_hand_the_device_over_and_back(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, devices=["cpu", "cpu"]))
    async for client in client_for(app):
        await wait_ready(client)
        released = await client.post("/v1/model/release")
        assert released.status_code == 200
        assert released.json()["loaded"] is False
        info = EditorInfo.model_validate((await client.get("/v1/info")).json())
        assert {w.state for w in info.workers} == {"released"}
        refused = await client.post("/v1/edits", json=payload())
        assert refused.status_code == 503
        assert "released" in ErrorResponse.model_validate(refused.json()).error.message
        assert (await client.get("/ready")).status_code == 503
        loaded = await client.post("/v1/model/load")
        assert loaded.status_code == 200 and loaded.json()["loaded"] is True
        assert (await client.post("/v1/edits", json=payload())).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'editor_handover_seconds_count{action="load"} 1.0' in metrics


async def test_service_started_without_loading_waits_for_a_load_request(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, load_on_start=False))
    async for client in client_for(app):
        info = await info_when(client, lambda info: info.workers[0].state == "released")
        assert info.workers[0].state == "released" and info.model is None
        assert (await client.get("/ready")).status_code == 503
        assert (await client.post("/v1/model/load")).status_code == 200
        await wait_ready(client)
        assert (await client.post("/v1/edits", json=payload())).status_code == 200
