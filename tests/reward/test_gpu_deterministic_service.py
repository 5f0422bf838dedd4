"""Deterministic mode through the service on a GPU (random-full): 16 concurrent clients.

Run on a GPU machine: ``pytest -m gpu tests/reward``. Each item is scored alone, then by 16
concurrent clients whose requests group and order the items differently; every answer must be
bit-identical to the item's answer alone, in expected and generate mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch

from tests.support.determinism import score_items, served_differences, served_placements
from tests.support.servers import ServiceProcess

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

CASES = [("single", "expected", 16), ("viescore", "expected", 4), ("single", "generate", 16)]


def side(seed: int) -> tuple[int, int]:
    return 512, 512 - 128 * (seed % 2)


@pytest.fixture(scope="module")
def reward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("reward")
    env = {
        "REWARD_MODEL": "random-full",
        "REWARD_CACHE_DIR": str(folder),
        "REWARD_DEVICES": "cuda:0",
        "REWARD_DETERMINISTIC": "true",
    }
    service = ServiceProcess("reward_service", env, folder / "reward.log")
    with service.running() as running:
        yield running.url


@pytest.mark.parametrize(("protocol", "mode", "count"), CASES)
def test_the_service_under_16_concurrent_clients_answers_as_alone(
    reward: str, protocol: str, mode: str, count: int
) -> None:
    body = {"protocol": protocol, "mode": mode, "max_new_tokens": 8}
    found = asyncio.run(served_placements(reward, score_items(range(count), side), body))
    assert served_differences(found) == []
