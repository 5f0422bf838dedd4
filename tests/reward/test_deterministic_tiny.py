"""Deterministic mode on the tiny judge (CPU): an item's answers never depend on its batch.

The same items are scored alone, in batches of 2, 8 and 16, in reversed order and shuffled among
other items, and through the real service by 16 concurrent clients; every placement must give
bit-identical answers (expected mode: the digit log-probabilities, hence the whole distribution
and score mass; generate mode: the text). Without the mode, on this machine every batched
placement of the 16 single-question items differed from the items alone (measured when this test
was written), so these comparisons do catch a batch leaking into an answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from reward_service.backends.base import BackendSpec, GeneratedText, ScoreTokenLogprobs
from reward_service.backends.transformers_backend import TransformersJudgeBackend
from tests.support.determinism import (
    differences,
    judge_items,
    placements,
    score_items,
    served_differences,
    served_placements,
)
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.tiny

# (protocol, mode, items): at least 16 questions each.
CASES = [("single", "expected", 16), ("viescore", "expected", 4), ("single", "generate", 16)]


def size(seed: int) -> tuple[int, int]:
    return 48 + 16 * (seed % 3), 64


@pytest.fixture(scope="module")
def judge(model_cache: Path) -> Iterator[TransformersJudgeBackend]:
    spec = BackendSpec("transformers", "tiny", None, "auto", str(model_cache), deterministic=True)
    backend = TransformersJudgeBackend(spec)
    assert backend.load("cpu").deterministic
    yield backend
    backend.release()
    torch.use_deterministic_algorithms(False)  # process-wide: leave later tests as they were


@pytest.mark.parametrize(("protocol", "mode", "count"), CASES)
def test_answers_are_bit_identical_in_every_placement(
    judge: TransformersJudgeBackend, protocol: str, mode: str, count: int
) -> None:
    items = judge_items(score_items(range(count), size), protocol, mode, max_new_tokens=8)
    partners = judge_items(score_items(range(100, 108), size), protocol, mode, max_new_tokens=8)
    found = placements(judge, items, partners)
    assert sum(len(item.questions) for item in items) >= 16
    assert differences(found) == {name: [] for name in found}
    answers = [answer for item in found["alone"] for answer in item]
    kind = ScoreTokenLogprobs if mode == "expected" else GeneratedText
    assert all(isinstance(answer, kind) for answer in answers)
    if mode == "expected":  # the items are told apart: equality is not a constant answer
        assert len(set(answers)) == len(answers)


@pytest.fixture(scope="module")
def reward(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("reward-logs")
    env = {
        "REWARD_MODEL": "tiny",
        "REWARD_CACHE_DIR": str(model_cache),
        "REWARD_DEVICES": "cpu",
        "REWARD_DETERMINISTIC": "true",
        "REWARD_MAX_WAIT_S": "0.05",
    }
    with ServiceProcess("reward_service", env, logs / "reward.log").running() as service:
        yield service.url


@pytest.mark.parametrize(("protocol", "mode", "count"), CASES)
def test_the_service_under_16_concurrent_clients_answers_as_alone(
    reward: str, protocol: str, mode: str, count: int
) -> None:
    wire_items = score_items(range(count), size)
    body = {"protocol": protocol, "mode": mode, "max_new_tokens": 8}
    before = shared_batches(reward)
    found = asyncio.run(served_placements(reward, wire_items, body, clients=16))
    assert all(len(answers) >= 1 for answers in found["concurrent"])
    assert served_differences(found) == []
    # Some model call carried more than one client's request, so a batch was shared.
    requests, calls = (a - b for a, b in zip(shared_batches(reward), before, strict=True))
    assert requests > calls


def shared_batches(url: str) -> tuple[float, float]:
    """(client requests summed over model calls, model calls) from the service's /metrics."""
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    found = dict(re.findall(r"^reward_batch_requests_(sum|count) (\S+)$", metrics, re.M))
    return float(found["sum"]), float(found["count"])
