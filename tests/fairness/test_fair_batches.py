"""The judge's batcher shares batches fairly: a client flooding the queue cannot keep another
client's item out of the next batch (scripted model, the batcher on its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reward_service.batcher import MicroBatcher
from service_kit.http.fairness import client_context
from tests.reward.test_batcher import ScriptedModel, batcher_for, occupy, submit

pytestmark = pytest.mark.anyio


async def submit_as(client: str, batcher: MicroBatcher[Any, Any], items: list[Any]) -> list[Any]:
    with client_context(client):
        return await submit(batcher, items)


async def test_while_a_floods_the_judge_b_s_item_goes_into_the_next_batch() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=4) as batcher:
        first = await occupy(model, batcher)
        flood = [asyncio.create_task(submit_as("A", batcher, [i, i + 1])) for i in range(1, 20, 2)]
        # One full batch of A's leaves the queue at once to be packed while the model is busy.
        while batcher.depth != 16:
            await asyncio.sleep(0.01)
        single = asyncio.create_task(submit_as("B", batcher, [1000]))
        while batcher.depth != 17:
            await asyncio.sleep(0.01)
        model.gate.set()
        assert await single == [2000]
        await first
        assert [len(r) for r in await asyncio.gather(*flood)] == [2] * 10
    assert model.batches[:2] == [[0], [1, 2, 3, 4]]  # running, and packed before B came
    # B's item is in the next batch formed after it came, not the fifth; A's units keep order.
    assert model.batches[2] == [5, 1000, 6, 7]


async def test_one_client_alone_is_batched_first_come_first_served() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=4) as batcher:
        first = await occupy(model, batcher)
        waiting = asyncio.create_task(submit_as("A", batcher, list(range(1, 7))))
        while batcher.depth != 2:
            await asyncio.sleep(0.01)
        model.gate.set()
        assert await waiting == [2 * i for i in range(1, 7)]
        await first
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6]]
