"""Model state cannot be wedged: release, load and jobs from several clients, real services.

Real service processes (uvicorn over HTTP), the fault fakes at the backend seam. Whatever the
order in which release, load and jobs arrive, the service ends consistent: ready exactly when a
job can run, the typed model_state in /ready and /v1/info says where the model is, and a job is
either served or refused at once with a 503 that carries the model state, never left hanging.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.services import (
    JOB_ROUTE,
    SERVICES,
    error_type,
    job_body,
    service_process,
    slow_job_body,
)
from tests.reliability.test_drain import job_is_running

pytestmark = pytest.mark.anyio

# Generous: a job that hangs (the old failure) would hit it; served and refused ones never do.
HANG = httpx.Timeout(60.0)


async def model_state(http: httpx.AsyncClient) -> str:
    return str((await http.get("/v1/info")).json()["model_state"])


async def assert_consistent(module: str, http: httpx.AsyncClient) -> str:
    """/ready, /v1/info and a job agree; returns the model state."""
    state = await model_state(http)
    ready = await http.get("/ready")
    if ready.status_code == 200:
        assert ready.json()["model_state"] == state == "loaded"
    else:
        assert ready.json()["error"]["model_state"] == state != "loaded"
    job = await http.post(JOB_ROUTE[module], json=job_body(module), timeout=HANG)
    if state == "loaded":
        assert job.status_code == 200, job.text
    else:
        assert job.status_code == 503 and error_type(job) == "not_ready"
        assert job.json()["error"]["model_state"] == state
    return state


@pytest.mark.parametrize("module", SERVICES)
async def test_a_load_sent_while_a_release_waits_for_a_job_leaves_the_model_loaded(
    module: str, tmp_path: Path
) -> None:
    journal, gate = tmp_path / "journal", tmp_path / "open"
    # The slow job holds until the load has been sent (a timed one, 2 s, could end first on a
    # loaded machine: the release done, and the load no longer sent while it waits).
    options = {"slow_s": 120, "slow_gate": str(gate), "journal": str(journal)}
    service = service_process(module, tmp_path, options=options)
    with service.running(ready_timeout_s=120):
        async with httpx.AsyncClient(base_url=service.url, timeout=HANG) as http:
            route = JOB_ROUTE[module]
            slow = asyncio.create_task(http.post(route, json=slow_job_body(module)))
            await job_is_running(service, http, journal)
            release = asyncio.create_task(http.post("/v1/model/release"))
            for _ in range(200):  # the release is waiting for the slow job
                if await model_state(http) == "released":
                    break
                await asyncio.sleep(0.02)
            refused = await http.post(route, json=job_body(module))  # a job in between
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["model_state"] == "released"
            sent = asyncio.Event()

            async def trace(name: str, _: object) -> None:
                if name == "http11.send_request_body.complete":
                    sent.set()

            load = asyncio.create_task(http.post("/v1/model/load", extensions={"trace": trace}))
            await asyncio.wait_for(sent.wait(), 60)
            assert not slow.done() and not release.done()  # the release still waits for the job
            gate.touch()

            assert (await slow).status_code == 200
            released, loaded = await release, await load
            assert released.status_code == 200 and released.json()["loaded"] is False
            assert loaded.status_code == 200
            assert loaded.json()["loaded"] is True and loaded.json()["model_state"] == "loaded"
            assert await assert_consistent(module, http) == "loaded"


@pytest.mark.parametrize("module", SERVICES)
async def test_any_interleaving_of_release_load_and_jobs_from_several_clients_ends_consistent(
    module: str, tmp_path: Path
) -> None:
    delay = {"edit_delay_s": 0.3} if module == "editor_service" else {"batch_delay_s": 0.3}
    service = service_process(module, tmp_path, options=delay)
    rng = random.Random(16)
    with service.running(ready_timeout_s=120):
        async with httpx.AsyncClient(base_url=service.url, timeout=HANG) as http:
            route = JOB_ROUTE[module]
            for _ in range(3):
                calls: list[tuple[str, str, dict[str, Any] | None]] = [
                    ("POST", route, job_body(module)) for _ in range(4)
                ]
                calls += [("POST", "/v1/model/release", None), ("POST", "/v1/model/load", None)]
                calls += [("POST", rng.choice(["/v1/model/release", "/v1/model/load"]), None)]
                rng.shuffle(calls)
                answers = await asyncio.gather(*(http.request(m, p, json=b) for m, p, b in calls))
                for (_, path, _), answer in zip(calls, answers, strict=True):
                    if path == route:  # served, or refused at once with the model state
                        assert answer.status_code in (200, 503), answer.text
                        if answer.status_code == 503:
                            assert answer.json()["error"]["model_state"] in ("released", "loading")
                    elif path == "/v1/model/release":
                        assert answer.status_code == 200, answer.text
                await assert_consistent(module, http)
            assert (await http.post("/v1/model/load")).status_code == 200
            assert await assert_consistent(module, http) == "loaded"
