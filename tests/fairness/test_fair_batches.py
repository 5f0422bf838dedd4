"""The admission queue shares the judge's batches fairly: a client flooding the queue cannot keep
another client's item out of the next batch (scripted model, the queue on its own)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service_kit.http.client_identity import client_context
from service_kit.replicas.admission import AdmissionQueue
from tests.service_kit.test_admission import ScriptedModel, batcher_for, occupy, submit
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def submit_as(client: str, batcher: AdmissionQueue[Any, Any], items: list[Any]) -> list[Any]:
    with client_context(client):
        return await submit(batcher, items)


async def test_while_a_floods_the_judge_b_s_item_goes_into_the_next_batch() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=4) as batcher:
        first = await occupy(model, batcher)
        flood = [asyncio.create_task(submit_as("A", batcher, [i, i + 1])) for i in range(1, 20, 2)]
        # One full batch of A's leaves the queue at once to be packed while the model is busy.
        await until(lambda: batcher.depth == 16, "A's flood queued (16 items waiting)")
        single = asyncio.create_task(submit_as("B", batcher, [1000]))
        await until(lambda: batcher.depth == 17, "B's item queued behind A's flood")
        model.gate.set()
        assert await single == [2000]
        await first
        assert [len(r) for r in await asyncio.gather(*flood)] == [2] * 10
    assert model.batches[:2] == [[0], [1, 2, 3, 4]]  # running, and packed before B came
    # B's item is in the next batch formed after it came, not the fifth, and first in it (B was
    # never served: issue 31, class 1); A's units keep their order.
    assert model.batches[2] == [1000, 5, 6, 7]


async def test_one_client_alone_is_batched_first_come_first_served() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=4) as batcher:
        first = await occupy(model, batcher)
        waiting = asyncio.create_task(submit_as("A", batcher, list(range(1, 7))))
        await until(lambda: batcher.depth == 2, "A's last two items waiting")
        model.gate.set()
        assert await waiting == [2 * i for i in range(1, 7)]
        await first
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6]]
