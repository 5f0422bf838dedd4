"""Out of device memory in one job: that job gets 507 ``out_of_memory``, the worker keeps serving.

The fake backend raises torch's own ``OutOfMemoryError`` (as a backend that does not translate it
to DeviceOutOfMemory would) for one input; real service processes over real HTTP. The answer is
our message, never torch's text; the next job is served by the same worker process.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service_kit.models.oom import is_out_of_memory
from shared_schemas import EditorInfo
from tests.reliability.services import JOB_ROUTE, SERVICES, error_type, job_body, service_process
from tests.support.fake_judges import read_journal


def worker_pids(module: str, http: httpx.Client, journal: Path) -> list[int | None]:
    """Which worker processes have served: the editor tells; the fake judge writes them down."""
    if module == "editor_service":
        return [w.pid for w in EditorInfo.model_validate(http.get("/v1/info").json()).workers]
    return sorted({e["pid"] for e in read_journal(journal)})


@pytest.mark.parametrize("module", SERVICES)
def test_out_of_memory_fails_only_that_job_with_507_and_the_same_worker_serves_the_next(
    module: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    service = service_process(module, tmp_path, options={"journal": str(journal)})
    route = JOB_ROUTE[module]
    with (
        service.running(ready_timeout_s=120),
        httpx.Client(base_url=service.url, timeout=120) as http,
    ):
        assert http.post(route, json=job_body(module)).status_code == 200
        before = worker_pids(module, http, journal)

        oom = http.post(route, json=job_body(module, "torch-oom"))
        assert oom.status_code == 507
        assert error_type(oom) == "out_of_memory" and int(oom.headers["Retry-After"]) >= 1
        message = oom.json()["error"]["message"]
        assert "out of device memory" in message
        assert "Tried to allocate" not in message and "Traceback" not in oom.text

        after = http.post(route, json=job_body(module))
        assert after.status_code == 200, after.text
        assert worker_pids(module, http, journal) == before  # same process, not a restart
        if module == "editor_service":
            info = EditorInfo.model_validate(http.get("/v1/info").json())
            assert info.workers[0].restarts == 0
            metrics = http.get("/metrics").text
            assert 'editor_jobs_total{outcome="out_of_memory"} 1.0' in metrics
        assert (http.get("/ready")).status_code == 200


def test_torch_out_of_memory_is_recognised_by_class_not_by_message() -> None:
    import torch

    class Subclassed(torch.OutOfMemoryError):
        pass

    class OutOfMemoryError(Exception):  # same name, not torch's
        pass

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(Subclassed())
    assert not is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(OutOfMemoryError())
    assert not is_out_of_memory(MemoryError())


@pytest.mark.gpu
def test_a_real_cuda_out_of_memory_gives_its_memory_back_and_the_same_worker_serves_on(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    journal = tmp_path / "journal"
    service = service_process(
        "editor_service",
        tmp_path,
        options={"journal": str(journal)},
        BACKEND="tests.support.fault_backends:CudaEditor",
        DEVICES="cuda:0",
    )
    with (
        service.running(ready_timeout_s=300),
        httpx.Client(base_url=service.url, timeout=300) as http,
    ):
        assert http.post("/v1/edits", json=job_body("editor_service")).status_code == 200
        oom = http.post("/v1/edits", json=job_body("editor_service", "cuda-oom"))
        assert oom.status_code == 507 and error_type(oom) == "out_of_memory"
        assert "Tried to allocate" not in oom.text
        after = http.post("/v1/edits", json=job_body("editor_service"))
        assert after.status_code == 200, after.text
        info = EditorInfo.model_validate(http.get("/v1/info").json())
        assert info.workers[0].restarts == 0
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len({e["pid"] for e in entries}) == 1  # one worker process throughout
    # The 2 GiB the failed edit held went back to the device, not only to torch's cache.
    assert entries[-1]["reserved"] < 2**30, entries
