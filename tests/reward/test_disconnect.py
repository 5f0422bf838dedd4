"""Clients that go away: their queued questions never reach the model.

Needs a real server (in-process ASGI transports never signal a disconnect); the model is the fake
judge at the backend seam, made slow so that one request runs while another waits.
"""

from __future__ import annotations

import asyncio
import json
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
    env = {
        "REWARD_BACKEND": FAKE,
        "REWARD_DEVICES": "cpu",
        "REWARD_CACHE_DIR": str(tmp_path),
        "REWARD_MAX_BATCH_IMAGES": "1",
        "REWARD_BACKEND_OPTIONS": json.dumps(
            {"batch_delay_s": 3, "journal": str(tmp_path / "journal")}
        ),
    }
    image = b64(image_bytes(16, 16))
    body = {
        "items": [{"source_image": image, "edited_image": image, "instruction": "score=4"}],
        "protocol": "single",
    }
    with ServiceProcess("reward_service", env, tmp_path / "reward.log").running() as reward:
        # One request runs (3 s), the other waits behind it; both clients give up after 1 s.
        async def give_up() -> list[BaseException | httpx.Response]:
            async with httpx.AsyncClient(timeout=1) as client:
                posts = (client.post(f"{reward.url}/v1/scores", json=body) for _ in range(2))
                return await asyncio.gather(*posts, return_exceptions=True)

        outcomes = asyncio.run(give_up())
        assert all(isinstance(o, httpx.ReadTimeout) for o in outcomes), outcomes
        # A request sent now is answered after anything still queued ahead of it has run.
        after = httpx.post(f"{reward.url}/v1/scores", json=body, timeout=30)
        assert after.status_code == 200
        assert metric(reward.url, "reward_client_disconnects_total") == 2
        # The model ran the first batch (for nobody) and the last; the waiting one never ran,
        # though it had already been handed to the worker.
        ran = [e for e in read_journal(tmp_path / "journal") if e["event"] == "batch"]
        assert len(ran) == 2
        assert metric(reward.url, 'reward_batches_total{outcome="ok"}') == 1
        assert metric(reward.url, "reward_queue_depth") == 0
        # Counted as 499 (client closed request), not logged as a server error.
        gone = 'reward_http_requests_total{method="POST",route="/v1/scores",status="499"}'
        assert metric(reward.url, gone) == 2
        assert "Exception in ASGI application" not in (tmp_path / "reward.log").read_text()
