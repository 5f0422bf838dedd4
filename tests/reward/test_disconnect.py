"""Clients that go away: their queued questions never reach the model.

Needs a real server (in-process ASGI transports never signal a disconnect); the model is the fake
judge at the backend seam, made slow so that one request runs while another waits.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from tests.reward.metrics_text import metric
from tests.support.fake_judges import read_journal
from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess

FAKE = "tests.support.fake_judges:FakeJudge"


def test_a_disconnected_clients_queued_questions_are_dropped_before_the_model(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    env = {
        "REWARD_BACKEND": FAKE,
        "REWARD_DEVICES": "cpu",
        "REWARD_CACHE_DIR": str(tmp_path),
        "REWARD_MAX_BATCH_IMAGES": "1",
        "REWARD_BACKEND_OPTIONS": json.dumps({"batch_delay_s": 3, "journal": str(journal)}),
    }
    image = b64(image_bytes(16, 16))
    body = {
        "items": [{"source_image": image, "edited_image": image, "instruction": "score=4"}],
        "protocol": "single",
    }
    with ServiceProcess("reward_service", env, tmp_path / "reward.log").running() as reward:
        # One request runs (3 s), the other waits behind it, handed to the worker; then both
        # clients give up. (They used to give up after a 1 s client timeout, which a loaded
        # machine could reach before the first batch was on the model: nothing ran for nobody.)
        async def give_up() -> list[BaseException | httpx.Response]:
            async with httpx.AsyncClient(base_url=reward.url, timeout=60) as client:
                posts = [
                    asyncio.create_task(client.post("/v1/scores", json=body)) for _ in range(2)
                ]
                deadline = time.monotonic() + 60
                while not (
                    [e for e in read_journal(journal) if e["event"] == "batch"]
                    and await asyncio.to_thread(
                        metric, reward.url, "reward_queue_wait_seconds_count"
                    )
                    == 2
                ):  # the first batch on the model, the second handed to the worker beside it
                    assert time.monotonic() < deadline, "the two batches never went out"
                    await asyncio.sleep(0.05)
                for post in posts:
                    post.cancel()
                return await asyncio.gather(*posts, return_exceptions=True)

        outcomes = asyncio.run(give_up())
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
        # A request sent now is answered after anything still queued ahead of it has run.
        after = httpx.post(f"{reward.url}/v1/scores", json=body, timeout=30)
        assert after.status_code == 200
        assert metric(reward.url, "reward_client_disconnects_total") == 2
        # The model ran the first batch (for nobody) and the last; the waiting one never ran,
        # though it had already been handed to the worker.
        ran = [e for e in read_journal(journal) if e["event"] == "batch"]
        assert len(ran) == 2
        assert metric(reward.url, 'reward_batches_total{outcome="ok"}') == 1
        assert metric(reward.url, "reward_queue_depth") == 0
        # Counted as 499 (client closed request), not logged as a server error.
        gone = 'reward_http_requests_total{method="POST",route="/v1/scores",status="499"}'
        assert metric(reward.url, gone) == 2
        assert "Exception in ASGI application" not in (tmp_path / "reward.log").read_text()
