"""Worker processes that die: real service processes, real signals, a fake model at the seam.

A worker SIGKILLed mid-job fails only the job(s) it held (503 ``worker_died``, retryable), is
restarted with backoff, and the service then answers the next 50 requests. A worker that keeps
dying is given up on: the service is not ready, and by default the process exits (75) so that
Compose's restart policy starts it afresh (Docker never restarts an unhealthy container).
A worker whose load is refused for its configuration is given up on at once (no restart) and the
process exits 78 (EX_CONFIG: a restart will not help), also when its fellow workers were given up
after failures (78 wins over 75).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from service_kit.app.server import EXIT_WORKERS_GAVE_UP
from service_kit.models.refusals import EXIT_CONFIG_REFUSED
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


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{condition.__name__} did not hold within {timeout_s}s")


async def editor_info(http: httpx.AsyncClient) -> EditorInfo:
    return EditorInfo.model_validate((await http.get("/v1/info")).json())


async def next_50_succeed(module: str, http: httpx.AsyncClient) -> None:
    """50 requests, 10 at a time: every one is answered 200."""
    limit = asyncio.Semaphore(10)

    async def one() -> int:
        async with limit:
            return (await http.post(JOB_ROUTE[module], json=job_body(module))).status_code

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    assert statuses == [200] * 50


async def test_a_killed_editor_worker_fails_only_its_job_and_the_next_50_requests_succeed(
    tmp_path: Path,
) -> None:
    # The slow jobs run until the gate opens after the kill (timed ones, 4 s, could end before
    # the kill on a loaded machine: no job of the victim's left to fail).
    gate = tmp_path / "open"
    options = {"slow_s": 120, "slow_gate": str(gate)}
    service = service_process("editor_service", tmp_path, options=options, DEVICES="cpu,cpu")
    with service.running(ready_timeout_s=120):
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            slow = slow_job_body("editor_service")
            running = [asyncio.create_task(http.post("/v1/edits", json=slow)) for _ in range(2)]

            async def both_busy() -> bool:
                return [w.state for w in (await editor_info(http)).workers] == ["busy", "busy"]

            await until(both_busy)
            queued = asyncio.create_task(http.post("/v1/edits", json=job_body("editor_service")))

            async def one_queued() -> bool:
                return (await editor_info(http)).queue_depth == 1

            await until(one_queued)
            victim = (await editor_info(http)).workers[0].pid
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            died = await next(asyncio.as_completed(running))  # the victim's, while one holds
            assert died.status_code == 503, died.text
            gate.touch()

            answers = await asyncio.gather(*running)
            assert sorted(r.status_code for r in answers) == [200, 503]
            died = next(r for r in answers if r.status_code == 503)
            assert error_type(died) == "worker_died" and int(died.headers["Retry-After"]) >= 1
            assert (await queued).status_code == 200  # waiting work is not lost

            async def worker_back() -> bool:
                return (await editor_info(http)).workers[0].state == "ready"

            await until(worker_back)
            assert (await http.get("/ready")).status_code == 200
            worker = (await editor_info(http)).workers[0]
            assert worker.restarts == 1 and worker.pid not in (None, victim)
            metrics = (await http.get("/metrics")).text
            assert 'editor_replica_restarts_total{device="cpu",replica="0"} 1.0' in metrics

            await next_50_succeed("editor_service", http)


async def test_a_killed_judge_worker_fails_only_the_batches_it_held_and_the_next_50_succeed(
    tmp_path: Path,
) -> None:
    journal, gate = tmp_path / "journal", tmp_path / "open"
    service = service_process(
        "reward_service",
        tmp_path,
        # The slow batch holds until the gate opens, after the kill (a timed one, 4 s, could end
        # first on a loaded machine, and be answered 200).
        options={"slow_s": 120, "slow_gate": str(gate), "journal": str(journal)},
        MAX_BATCH_IMAGES="2",  # one item per batch
    )
    with service.running(ready_timeout_s=120):
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            running = asyncio.create_task(
                http.post("/v1/scores", json=slow_job_body("reward_service"))
            )

            async def batch_started() -> bool:
                return any(e["event"] == "batch" for e in read_journal(journal))

            await until(batch_started)
            victim = next(e["pid"] for e in read_journal(journal) if e["event"] == "batch")
            # The replica takes a second batch while one runs; a third waits for it.
            held = asyncio.create_task(http.post("/v1/scores", json=job_body("reward_service")))

            async def second_batch_on_the_model() -> bool:
                metrics = (await http.get("/metrics")).text
                started = re.search(r"^reward_queue_wait_seconds_count (\S+)$", metrics, re.M)
                return started is not None and float(started.group(1)) >= 2

            await until(second_batch_on_the_model)
            sent = asyncio.Event()

            async def trace(name: str, _: object) -> None:
                if name == "http11.send_request_body.complete":
                    sent.set()

            waiting = asyncio.create_task(
                http.post(
                    "/v1/scores", json=job_body("reward_service"), extensions={"trace": trace}
                )
            )
            await asyncio.wait_for(sent.wait(), 60)  # in the service before the kill
            os.kill(victim, signal.SIGKILL)

            died = await running
            assert died.status_code == 503, died.text
            assert error_type(died) == "worker_died" and int(died.headers["Retry-After"]) >= 1
            second = await held
            assert second.status_code == 200 or error_type(second) == "worker_died"
            assert (await waiting).status_code == 200  # waited for the restart, not failed

            async def ready() -> bool:
                return (await http.get("/ready")).status_code == 200

            await until(ready)
            loads = [e["pid"] for e in read_journal(journal) if e["event"] == "load"]
            assert len(loads) == 2 and loads[0] == victim and loads[1] != victim

            await next_50_succeed("reward_service", http)


def failing_service(module: str, tmp_path: Path, **settings: str) -> ServiceProcess:
    """A service whose one worker fails to load every time; given up on after its 2nd exit."""
    return service_process(
        module, tmp_path, options={"fail_load": True}, MAX_WORKER_RESTARTS="1", **settings
    )


@pytest.mark.parametrize("module", SERVICES)
async def test_a_service_whose_workers_were_all_given_up_on_exits_to_be_restarted(
    module: str, tmp_path: Path
) -> None:
    service = failing_service(module, tmp_path)
    service.start()
    try:
        assert service.process is not None
        assert service.process.wait(120) == EXIT_WORKERS_GAVE_UP
        assert "every worker has been given up on" in service.log()
    finally:
        service.stop()


@pytest.mark.parametrize("module", SERVICES)
async def test_with_exit_when_failed_off_a_service_that_gave_up_stays_up_and_not_ready(
    module: str, tmp_path: Path
) -> None:
    service = failing_service(module, tmp_path, EXIT_WHEN_FAILED="false")
    service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:

            async def given_up() -> bool:
                if "giving up on it" not in service.log():  # service_kit.replicas.processes says so
                    return False
                try:
                    return (await http.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False  # not listening yet

            await until(given_up, timeout_s=120)
            ready = await http.get("/ready")
            assert ready.status_code == 503 and error_type(ready) == "not_ready"
            why = "keep failing" if module == "editor_service" else "failed to load on cpu"
            assert why in ready.json()["error"]["message"]
            refused = await http.post(JOB_ROUTE[module], json=job_body(module))
            assert refused.status_code == 503 and "Retry-After" in refused.headers
            assert (await http.get("/health")).status_code == 200
        assert service.process is not None and service.process.poll() is None
    finally:
        assert service.stop() == 0


REFUSED = {"editor_service": "UnsupportedOption: ", "reward_service": "InvalidOption: "}


@pytest.mark.parametrize("module", SERVICES)
async def test_a_load_refused_for_its_configuration_is_given_up_at_once_and_exits_78(
    module: str, tmp_path: Path
) -> None:
    # The default restart policy (5 restarts) would take about 20 s and exit 75.
    service = service_process(module, tmp_path, options={"refuse_load": True})
    service.start()
    try:
        assert service.process is not None
        assert service.process.wait(120) == EXIT_CONFIG_REFUSED
        log = service.log()
        assert log.count("failed to load: " + REFUSED[module]) == 1  # one attempt, no restart
        assert "restarting" not in log
        assert "refused for its configuration" in log and "(refuse_load)" in log
        assert "a restart will not help" in log
    finally:
        service.stop()


@pytest.mark.parametrize("module", SERVICES)
async def test_a_service_with_one_worker_refused_and_the_other_given_up_exits_78(
    module: str, tmp_path: Path
) -> None:
    """A restart of the service could bring the failing worker back, never the refused one: the
    configuration must be fixed, so 78 (EX_CONFIG) wins over 75 (EX_TEMPFAIL)."""
    service = service_process(
        module,
        tmp_path,
        options={"refuse_load_once": str(tmp_path / "refused")},
        DEVICES="cpu,cpu",
        MAX_WORKER_RESTARTS="1",
    )
    service.start()
    try:
        assert service.process is not None
        assert service.process.wait(120) == EXIT_CONFIG_REFUSED
        log = service.log()
        assert log.count("failed to load: " + REFUSED[module]) == 1
        assert log.count("refused its configuration; giving up on it at once") == 1
        assert re.search(r"worker \d exited 2 times in \S+; giving up on it", log)  # the other
        assert "no worker is left and a model load was refused for its configuration" in log
        assert "(refuse_load_once); replica(s) [" in log and "given up on after repeated" in log
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("module", "backend"), [("editor_service", "diffusers"), ("reward_service", "transformers")]
)
async def test_a_real_backend_refusing_its_model_setting_when_built_exits_78_at_once(
    module: str, backend: str, tmp_path: Path
) -> None:
    """The built-in backend, not a fake: its constructor refuses a model that is no folder, hub
    id or built-in, before the runtime's load; given up at once, not restarted as a crash."""
    service = service_process(module, tmp_path, BACKEND=backend, MODEL="./models/missing")
    service.start()
    try:
        assert service.process is not None
        assert service.process.wait(120) == EXIT_CONFIG_REFUSED
        log = service.log()
        assert log.count("failed to load: ConfigurationRefused: model './models/missing'") == 1
        assert "restarting" not in log and "a restart will not help" in log
    finally:
        service.stop()


@pytest.mark.parametrize("module", SERVICES)
async def test_a_service_kept_up_after_a_refused_load_says_why_and_is_not_ready(
    module: str, tmp_path: Path
) -> None:
    service = service_process(
        module, tmp_path, options={"refuse_load": True}, EXIT_WHEN_FAILED="false"
    )
    service.start()
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:

            async def refused() -> bool:
                try:
                    ready = await http.get("/ready")
                except httpx.TransportError:
                    return False  # not listening yet
                return "fix the configuration" in ready.text

            await until(refused, timeout_s=120)
            ready = await http.get("/ready")
            assert ready.status_code == 503 and error_type(ready) == "not_ready"
            message = ready.json()["error"]["message"]
            assert REFUSED[module] in message and "(refuse_load)" in message
            assert (await http.get("/health")).status_code == 200
        assert service.log().count("failed to load: ") == 1
        assert service.process is not None and service.process.poll() is None
    finally:
        assert service.stop() == 0
