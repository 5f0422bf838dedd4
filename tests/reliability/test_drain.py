"""SIGTERM drains: real service processes, real signals, a fake model at the backend seam.

On SIGTERM the process keeps its socket open and says why it will not take more: /ready is 503
("draining") and a new job gets 503 with Retry-After, while jobs already admitted (the editor's
queued ones too) finish and are answered 200. Then it exits 0. A job still running when the
drain time is over is answered 503 rather than cut off, and the process still exits 0.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from shared_schemas import EditorInfo
from tests.reliability.services import (
    JOB_ROUTE,
    SERVICES,
    error_type,
    job_body,
    service_process,
    slow_job_body,
)
from tests.support.fake_judges import read_journal
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll an async predicate until it holds; fail the test if it never does."""
    for _ in range(int(timeout_s / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{condition.__name__} did not hold within {timeout_s}s")


async def job_is_running(service: ServiceProcess, http: httpx.AsyncClient, journal: Path) -> None:
    """Wait until the slow job occupies the worker (editor: a busy worker; judge: a batch)."""
    if service.module == "editor_service":

        async def worker_busy() -> bool:
            info = EditorInfo.model_validate((await http.get("/v1/info")).json())
            return info.workers[0].state == "busy"

        await until(worker_busy)
    else:

        async def batch_started() -> bool:
            return any(e["event"] == "batch" for e in read_journal(journal))

        await until(batch_started)


def exit_code(service: ServiceProcess, timeout_s: float) -> int:
    assert service.process is not None
    return service.process.wait(timeout_s)


@pytest.mark.parametrize("module", SERVICES)
async def test_sigterm_makes_ready_503_finishes_admitted_jobs_and_exits_0(
    module: str, tmp_path: Path
) -> None:
    journal, gate = tmp_path / "journal", tmp_path / "open"
    # The slow job runs until the test opens the gate (a timed one, 5 s, could end before the
    # drain was checked on a loaded machine: the job answered, nothing left to drain).
    options = {"slow_s": 120, "slow_gate": str(gate), "journal": str(journal)}
    service = service_process(module, tmp_path, options=options, DRAIN_TIMEOUT_S="60")
    route = JOB_ROUTE[module]
    service.start()
    try:
        service.wait_ready(120)
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            running = asyncio.create_task(http.post(route, json=slow_job_body(module)))
            await job_is_running(service, http, journal)
            queued = None
            if module == "editor_service":  # one worker: this one waits in the queue
                queued = asyncio.create_task(http.post(route, json=job_body(module)))

                async def in_queue() -> bool:
                    return (
                        EditorInfo.model_validate((await http.get("/v1/info")).json()).queue_depth
                        == 1
                    )

                await until(in_queue)
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)

            async def not_ready() -> bool:
                return (await http.get("/ready")).status_code == 503

            await until(not_ready, timeout_s=10)
            assert not running.done()  # 503 while the admitted job still runs
            ready = await http.get("/ready")
            assert (
                error_type(ready) == "not_ready" and ready.json()["error"]["message"] == "draining"
            )
            refused = await http.post(route, json=job_body(module))
            assert refused.status_code == 503 and error_type(refused) == "not_ready"
            assert int(refused.headers["Retry-After"]) >= 1
            assert (await http.get("/health")).status_code == 200  # alive, only not ready
            assert not running.done()

            gate.touch()
            finished = await running
            assert finished.status_code == 200, finished.text
            if queued is not None:
                assert (await queued).status_code == 200
        assert exit_code(service, timeout_s=60) == 0
    finally:
        service.stop()


@pytest.mark.parametrize("module", SERVICES)
async def test_a_job_unfinished_when_the_drain_time_is_over_gets_503_and_the_process_exits_0(
    module: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    options = {"slow_s": 120, "journal": str(journal)}
    service = service_process(module, tmp_path, options=options, DRAIN_TIMEOUT_S="1")
    service.start()
    try:
        service.wait_ready(120)
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
            running = asyncio.create_task(http.post(JOB_ROUTE[module], json=slow_job_body(module)))
            await job_is_running(service, http, journal)
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
            cut_short = await running
        assert cut_short.status_code == 503
        assert error_type(cut_short) == "not_ready"
        assert "shutting down" in cut_short.json()["error"]["message"]
        assert exit_code(service, timeout_s=60) == 0
    finally:
        service.stop()


async def test_a_second_sigterm_ends_the_drain_at_once(tmp_path: Path) -> None:
    service = service_process("editor_service", tmp_path, options={"slow_s": 120})
    service.start()
    try:
        service.wait_ready(120)
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
            running = asyncio.create_task(
                http.post("/v1/edits", json=slow_job_body("editor_service"))
            )
            await job_is_running(service, http, tmp_path / "unused")
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)

            async def not_ready() -> bool:
                return (await http.get("/ready")).status_code == 503

            await until(not_ready, timeout_s=10)
            service.process.send_signal(signal.SIGTERM)
            cut_short = await running
        assert cut_short.status_code == 503 and error_type(cut_short) == "not_ready"
        assert exit_code(service, timeout_s=60) == 0
    finally:
        service.stop()
