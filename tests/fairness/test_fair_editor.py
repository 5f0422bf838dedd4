"""The editor shares its worker fairly between clients (real uvicorn, fake backend): while client
A keeps the queue full, client B's single edit starts within one job per worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess

FAKE = "tests.support.fake_editors:MirrorEditBackend"


def starts(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_b_s_single_edit_starts_within_one_job_while_a_keeps_the_queue_full(
    tmp_path: Path,
) -> None:
    log = tmp_path / "starts.log"
    env = {
        "EDITOR_BACKEND": FAKE,
        "EDITOR_DEVICES": "cpu",
        "EDITOR_CACHE_DIR": str(tmp_path),
        "EDITOR_QUEUE_CAPACITY": "16",
        "EDITOR_BACKEND_OPTIONS": json.dumps({"edit_delay_s": 0.4, "start_log": str(log)}),
    }
    image = b64(image_bytes(16, 16))

    def body(name: str) -> dict[str, object]:
        return {"image": image, "instruction": name, "num_inference_steps": 2}

    with ServiceProcess("editor_service", env, tmp_path / "editor.log").running() as editor:

        async def share() -> tuple[int, list[int]]:
            async with httpx.AsyncClient(base_url=editor.url, timeout=60) as http:
                a = {"X-Editbench-Client": "alice/run-a"}
                flood = [
                    asyncio.create_task(http.post("/v1/edits", json=body(f"a{i}"), headers=a))
                    for i in range(8)
                ]
                while not starts(log):
                    await asyncio.sleep(0.02)
                started_before_b = len(starts(log))
                b = {"X-Editbench-Client": "bob/run-b"}
                single = await http.post("/v1/edits", json=body("b0"), headers=b)
                statuses = [r.status_code for r in await asyncio.gather(*flood)]
                return started_before_b, [single.status_code, *statuses]

        started_before_b, statuses = asyncio.run(share())
        assert statuses == [200] * 9
        order = starts(log)
        assert order.index("b0") <= started_before_b + 1, order  # at most one more of A's first
        assert order.index("b0") < 7, order  # first come, first served would put it last
        metrics = httpx.get(f"{editor.url}/metrics", timeout=10).text
        assert 'editor_client_queue_wait_seconds_count{client="bob/run-b"} 1.0' in metrics
        assert 'editor_client_queue_wait_seconds_count{client="alice/run-a"} 8.0' in metrics
        assert 'editor_client_queue_depth{client="alice/run-a"} 0.0' in metrics
