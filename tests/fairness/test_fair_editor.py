"""The editor shares its worker fairly between clients (real uvicorn, fake backend): while client
A keeps the queue full, client B's single edit starts within one job per worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from shared_schemas import EditorInfo
from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess
from tests.support.waiting import until

FAKE = "tests.support.fake_editors:MirrorEditBackend"


def starts(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_b_s_single_edit_starts_within_one_job_while_a_keeps_the_queue_full(
    tmp_path: Path,
) -> None:
    log, gate = tmp_path / "starts.log", tmp_path / "open"
    env = {
        "EDITOR_BACKEND": FAKE,
        "EDITOR_DEVICES": "cpu",
        "EDITOR_CACHE_DIR": str(tmp_path),
        "EDITOR_QUEUE_CAPACITY": "16",
        # Each edit waits for the gate: A's first holds the worker until B's edit is queued (a
        # timed edit raced B's request: a slow one let more of A's edits start before B's came).
        "EDITOR_BACKEND_OPTIONS": json.dumps({"edit_gate": str(gate), "start_log": str(log)}),
    }
    image = b64(image_bytes(16, 16))

    def body(name: str) -> dict[str, object]:
        return {"image": image, "instruction": name, "num_inference_steps": 2}

    with ServiceProcess("editor_service", env, tmp_path / "editor.log").running() as editor:

        async def share() -> list[int]:
            async with httpx.AsyncClient(base_url=editor.url, timeout=120) as http:

                def waiting(depth: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        info = EditorInfo.model_validate((await http.get("/v1/info")).json())
                        return info.queue_depth == depth

                    return check

                a = {"X-Editbench-Client": "alice/run-a"}
                flood = [
                    asyncio.create_task(http.post("/v1/edits", json=body(f"a{i}"), headers=a))
                    for i in range(8)
                ]
                # One of A's edits holds the worker, the other seven wait.
                await until(waiting(7), "A's edits filling the queue")
                assert len(starts(log)) == 1, starts(log)
                b = {"X-Editbench-Client": "bob/run-b"}
                single = asyncio.create_task(http.post("/v1/edits", json=body("b0"), headers=b))
                await until(waiting(8), "B's edit queued")
                gate.touch()
                statuses = [r.status_code for r in await asyncio.gather(single, *flood)]
                return statuses

        statuses = asyncio.run(share())
        assert statuses == [200] * 9
        order = starts(log)
        # B's edit starts right after the job that was running when it came: first come, first
        # served would start it last, after A's seven waiting edits.
        assert order.index("b0") == 1, order
        metrics = httpx.get(f"{editor.url}/metrics", timeout=10).text
        assert 'editor_client_queue_wait_seconds_count{client="bob/run-b"} 1.0' in metrics
        assert 'editor_client_queue_wait_seconds_count{client="alice/run-a"} 8.0' in metrics
        assert 'editor_client_queue_depth{client="alice/run-a"} 0.0' in metrics
