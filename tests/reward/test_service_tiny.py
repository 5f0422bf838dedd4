"""The reward service as users run it: ``python -m reward_service`` with the tiny judge (CPU)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared_schemas import ErrorResponse, ProtocolsResponse, RewardInfo, ScoreResponse
from tests.reward.metrics_text import metric
from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.tiny

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def reward(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("reward-logs")
    env = {
        "REWARD_MODEL": "tiny",
        "REWARD_CACHE_DIR": str(model_cache),
        "REWARD_DEVICES": "cpu",
        "REWARD_MAX_BATCH_IMAGES": "32",
        "REWARD_MAX_WAIT_S": "0.05",
        "REWARD_PROTOCOLS_DIR": str(DATA),
    }
    with ServiceProcess("reward_service", env, logs / "reward.log").running() as service:
        yield service.url


def item(seed: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": f"item-{seed}",
        "source_image": b64(image_bytes(64, 64, seed=seed)),
        "edited_image": b64(image_bytes(48 + 8 * (seed % 3), 64, seed=seed + 100)),
        "instruction": f"make the sky red {'and the grass blue ' * (seed % 4)}".strip(),
        **changes,
    }


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/scores", json=body, timeout=120)


def test_the_service_is_ready_with_the_tiny_judge(reward: str) -> None:
    assert httpx.get(f"{reward}/ready", timeout=10).status_code == 200
    info = RewardInfo.model_validate(httpx.get(f"{reward}/v1/info", timeout=10).json())
    assert info.model is not None
    assert (info.model.id, info.model.source, info.model.meaningful) == ("tiny", "tiny", False)
    assert info.model.model_class == "Qwen3VLForConditionalGeneration"
    assert {"physics-judge", "gedit", "imgedit", "kris", "rise", "single", "viescore"} <= set(
        info.protocols
    )


def test_a_viescore_result_has_sc_pq_and_overall_in_0_to_10(reward: str) -> None:
    response = post(reward, {"items": [item(1), item(2)]})
    assert response.status_code == 200, response.text
    body = ScoreResponse.model_validate(response.json())
    listed = ProtocolsResponse.model_validate(httpx.get(f"{reward}/v1/protocols").json())
    viescore = next(p.hash for p in listed.protocols if p.name == "viescore")
    for result in body.results:
        assert result.scored and len(result.questions) == 4
        for value in (result.sc, result.pq, result.overall):
            assert value is not None and 0.0 <= value <= 10.0
        assert result.protocol_hash == viescore
        assert all(q.score_mass is not None and q.score_mass > 0 for q in result.questions)
    assert body.results[0].questions != body.results[1].questions


def test_32_concurrent_requests_all_succeed_in_shared_batches_with_unbatched_scores(
    reward: str,
) -> None:
    alone = {
        seed: post(reward, {"items": [item(seed)], "protocol": "single"}).json()["results"][0]
        for seed in range(8)
    }

    def passes() -> tuple[float, float]:
        """Forward passes so far: all, and those that carried more than one request."""
        count = metric(reward, "reward_batch_requests_count")
        return count, count - metric(reward, 'reward_batch_requests_bucket{le="1.0"}')

    before = passes()

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            posts = (
                client.post(
                    f"{reward}/v1/scores", json={"items": [item(i % 8)], "protocol": "single"}
                )
                for i in range(32)
            )
            return list(await asyncio.gather(*posts))

    responses = asyncio.run(many())
    assert [r.status_code for r in responses] == [200] * 32
    for i, response in enumerate(responses):
        [result] = response.json()["results"]
        assert result["overall"] == pytest.approx(alone[i % 8]["overall"], abs=1e-3)
    after = passes()
    batches, shared = after[0] - before[0], after[1] - before[1]
    assert 0 < batches < 32  # 32 one-question requests went through fewer forward passes
    assert shared >= 1  # at least one pass carried several clients' questions


def test_generate_mode_records_the_tiny_judges_junk_as_unscored(reward: str) -> None:
    body = {"items": [item(seed) for seed in range(3)], "mode": "generate", "max_new_tokens": 16}
    response = post(reward, body)
    assert response.status_code == 200
    results = ScoreResponse.model_validate(response.json()).results
    questions = [q for r in results for q in r.questions]
    assert all(q.raw_text is not None and q.distribution is None for q in questions)
    unscored = [q for q in questions if q.score is None]
    assert unscored and all(q.error for q in unscored)
    for result in results:
        assert result.scored == all(q.score is not None for q in result.questions)
        if not result.scored:
            assert result.overall is None
    assert metric(reward, 'reward_questions_total{mode="generate",outcome="unscored"}') >= len(
        unscored
    )


def test_a_user_protocol_is_offered_and_its_category_prompts_are_used(reward: str) -> None:
    plain = post(reward, {"items": [item(4)], "protocol": "physics-judge"})
    physics = post(reward, {"items": [item(4, category="physics")], "protocol": "physics-judge"})
    assert plain.status_code == physics.status_code == 200
    a, b = plain.json()["results"][0], physics.json()["results"][0]
    assert a["protocol_hash"] == b["protocol_hash"]
    assert a["overall"] != b["overall"]  # another system and question prompt


def test_bad_input_is_refused_and_the_service_keeps_serving(reward: str) -> None:
    broken = post(reward, {"items": [item(1, edited_image=b64(image_bytes()[:70]))]})
    unknown = post(reward, {"items": [item(1)], "protocol": "gedit"})
    assert broken.status_code == 400 and unknown.status_code == 400
    assert ErrorResponse.model_validate(broken.json()).error.param == "items[0].edited_image"
    assert "gedit" in ErrorResponse.model_validate(unknown.json()).error.message
    assert post(reward, {"items": [item(1)]}).status_code == 200
