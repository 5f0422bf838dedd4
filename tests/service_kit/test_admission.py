"""The admission queue on its own, with a scripted model: batching, admission, faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from service_kit.errors import (
    BackendError,
    DeadlineExceeded,
    NotReady,
    PayloadTooLarge,
    QueueFull,
)
from service_kit.replicas.admission import AdmissionQueue, BatchPolicy
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


class ScriptedModel:
    """Doubles its inputs, answering each by its key; can be held busy, made to fail or to
    leave an item unanswered."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.running = 0
        self.overlaps = 0

    async def __call__(self, batch: dict[int, Any]) -> Mapping[int, Any]:
        self.running += 1
        self.overlaps += self.running > 1
        try:
            self.batches.append(list(batch.values()))
            self.started.set()
            await self.gate.wait()
            if any(item == "boom" for item in batch.values()):
                raise RuntimeError("model crashed")
            answers = [(uid, item * 2) for uid, item in batch.items() if item != "unanswered"]
            return dict(reversed(answers))  # answered by key, in no particular order
        finally:
            self.running -= 1

    async def hold(self) -> None:
        """Block the model on its next batch, and wait until that batch has started."""
        self.gate.clear()
        self.started.clear()


@asynccontextmanager
async def batcher_for(
    model: ScriptedModel, **options: Any
) -> AsyncIterator[AdmissionQueue[Any, Any]]:
    policy: dict[str, Any] = {"max_batch_cost": 4, "max_wait_s": 0.0}
    for name in ("max_batch_cost", "max_wait_s", "key", "cost"):
        if name in options:
            policy[name] = options.pop(name)
    settings: dict[str, Any] = {"capacity": 32, "timeout_s": 60.0}
    settings.update(options)
    batcher: AdmissionQueue[Any, Any] = AdmissionQueue(
        model, policy=BatchPolicy(**policy), **settings
    )
    batcher.start()
    try:
        yield batcher
    finally:
        model.gate.set()
        await batcher.stop(drain_timeout_s=5)


async def submit(batcher: AdmissionQueue[Any, Any], items: list[Any]) -> list[Any]:
    async with batcher.reserve(len(items)) as slot:
        return [done.output for done in await slot.submit(items, label="test")]


async def occupy(
    model: ScriptedModel, batcher: AdmissionQueue[Any, Any]
) -> asyncio.Task[list[Any]]:
    """Start a one-item request that holds the model until ``model.gate`` is set."""
    await model.hold()
    task = asyncio.create_task(submit(batcher, [0]))
    await until(model.started.is_set, "the model started the occupying request")
    return task


async def test_results_come_back_in_order_for_each_request() -> None:
    model = ScriptedModel()
    async with batcher_for(model) as batcher:
        assert await submit(batcher, [1, 2, 3]) == [2, 4, 6]


async def test_concurrent_requests_share_one_batch() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=8, max_wait_s=30.0) as batcher:
        results = await asyncio.gather(*(submit(batcher, [i, i]) for i in range(4)))
    assert results == [[0, 0], [2, 2], [4, 4], [6, 6]]
    assert [len(b) for b in model.batches] == [8]  # closed at max size, not after 30 s


async def test_a_batch_closes_after_max_wait_with_fewer_questions() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=8, max_wait_s=0.05) as batcher:
        assert await submit(batcher, [5]) == [10]
    assert [len(b) for b in model.batches] == [1]


async def test_requests_that_wait_while_the_model_is_busy_go_together() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=16) as batcher:
        first = await occupy(model, batcher)
        waiting = [asyncio.create_task(submit(batcher, [i])) for i in range(1, 6)]
        await until(lambda: batcher.depth >= 5, "five requests waiting while the model is busy")
        model.gate.set()
        assert await first == [0]
        assert [await t for t in waiting] == [[2], [4], [6], [8], [10]]
    assert [len(b) for b in model.batches] == [1, 5]
    assert model.overlaps == 0


async def test_a_large_request_spans_several_batches_and_keeps_its_order() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=4) as batcher:
        assert await submit(batcher, list(range(10))) == [2 * i for i in range(10)]
    assert [len(b) for b in model.batches] == [4, 4, 2]


async def test_a_batch_holds_one_kind_of_question() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=8, key=lambda item: item % 2) as batcher:
        first = await occupy(model, batcher)
        mixed = asyncio.create_task(submit(batcher, [1, 2, 3, 4]))
        await until(lambda: batcher.depth >= 4, "four items waiting while the model is busy")
        model.gate.set()
        await first
        assert await mixed == [2, 4, 6, 8]
    assert model.batches[1:] == [[1, 3], [2, 4]]


async def test_a_full_queue_refuses_with_retry_after_before_any_work() -> None:
    model = ScriptedModel()
    async with batcher_for(model, capacity=3) as batcher:
        first = await occupy(model, batcher)  # running: not counted as waiting
        queued = asyncio.create_task(submit(batcher, [1, 2, 3]))
        await until(lambda: batcher.depth >= 3, "the queue full with three items")
        with pytest.raises(QueueFull, match=r"the queue \(3\) is full") as refused:
            async with batcher.reserve(1):
                pytest.fail("a full queue must refuse before the body runs")
        assert refused.value.status_code == 429
        assert int(refused.value.headers()["Retry-After"]) >= 1
        model.gate.set()
        await first
        assert await queued == [2, 4, 6]
        assert await submit(batcher, [4]) == [8]  # room again


async def test_reserved_slots_count_as_taken_until_released() -> None:
    model = ScriptedModel()
    async with batcher_for(model, capacity=2) as batcher:
        async with batcher.reserve(2):
            with pytest.raises(QueueFull, match=r"the queue \(2\) is full"):
                async with batcher.reserve(1):
                    pass
        async with batcher.reserve(2):  # released without being submitted
            pass
        assert await submit(batcher, [1, 2]) == [2, 4]


async def test_a_request_larger_than_the_queue_is_refused_as_too_large() -> None:
    model = ScriptedModel()
    async with batcher_for(model, capacity=3) as batcher:
        with pytest.raises(PayloadTooLarge, match="at most 3"):
            async with batcher.reserve(4):
                pass


async def test_every_request_of_a_failed_batch_gets_the_error() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=8) as batcher:
        first = await occupy(model, batcher)
        doomed = [asyncio.create_task(submit(batcher, items)) for items in ([1], ["boom"], [3])]
        await until(lambda: batcher.depth >= 3, "three requests waiting for the failing batch")
        model.gate.set()
        await first
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(o, BackendError) for o in outcomes), outcomes
        assert await submit(batcher, [7]) == [14]  # and the batcher keeps serving


async def test_an_item_the_model_leaves_unanswered_fails_alone() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=8, max_wait_s=30.0) as batcher:
        answered = asyncio.create_task(submit(batcher, [1, 2, 3]))
        with pytest.raises(BackendError, match="no answer"):
            await submit(batcher, [4, "unanswered", 5, 6, 7])
        assert await answered == [2, 4, 6]  # matched by key, whatever the answers' order


async def test_a_cancelled_request_never_reaches_the_model() -> None:
    model = ScriptedModel()
    async with batcher_for(model) as batcher:
        first = await occupy(model, batcher)
        gone = asyncio.create_task(submit(batcher, [41, 42]))
        await until(lambda: batcher.depth >= 2, "the doomed request waiting")
        gone.cancel()
        model.gate.set()
        await first
        assert await submit(batcher, [1]) == [2]
    assert 41 not in [item for batch in model.batches for item in batch]


async def test_a_request_past_its_deadline_is_answered_504_not_run() -> None:
    model = ScriptedModel()
    async with batcher_for(model, timeout_s=0.05) as batcher:
        first = await occupy(model, batcher)
        late = asyncio.create_task(submit(batcher, [9]))
        # Answered at its deadline while the model is still held (a fixed sleep here raced the
        # deadline: a request admitted late enough was still alive when the model came free).
        await asyncio.wait_for(asyncio.wait({late}), timeout=30)
        model.gate.set()
        with pytest.raises(DeadlineExceeded, match="unstarted"):
            await late
        first.cancel()
    assert 9 not in [item for batch in model.batches for item in batch]


async def test_stopping_answers_queued_requests_with_not_ready() -> None:
    model = ScriptedModel()
    batcher: AdmissionQueue[Any, Any] = AdmissionQueue(
        model, policy=BatchPolicy(max_batch_cost=4), capacity=8, timeout_s=60
    )
    batcher.start()
    first = await occupy(model, batcher)
    queued = asyncio.create_task(submit(batcher, [1]))
    await until(lambda: batcher.depth >= 1, "a request waiting when the batcher stops")
    await batcher.stop(drain_timeout_s=0.05)
    with pytest.raises(NotReady, match="the service is shutting down"):
        await queued
    with pytest.raises(NotReady, match="the service is shutting down"):
        await first  # its batch was still running when the batcher stopped
    with pytest.raises(NotReady, match="the service is shutting down"):
        async with batcher.reserve(1):
            pass


async def test_a_reservation_takes_exactly_the_items_it_reserved_for() -> None:
    model = ScriptedModel()
    async with batcher_for(model) as batcher:
        async with batcher.reserve(1) as slot:
            with pytest.raises(ValueError, match="1 slots were reserved for 3 items"):
                await slot.submit([1, 2, 3])
        assert await submit(batcher, [1]) == [2]


class ScriptedPrepare:
    """A prepare stage that records when it ran relative to the model."""

    def __init__(self, model: ScriptedModel) -> None:
        self.model = model
        self.during_model_run = 0
        self.calls = 0

    async def __call__(self, batch: dict[int, Any]) -> dict[int, Any]:
        self.calls += 1
        self.during_model_run += self.model.running > 0
        return dict(batch)


async def test_the_next_full_batch_is_prepared_while_the_model_runs() -> None:
    model = ScriptedModel()
    prepare = ScriptedPrepare(model)
    async with batcher_for(model, max_batch_cost=2, pack=prepare) as batcher:
        first = await occupy(model, batcher)
        full = asyncio.create_task(submit(batcher, [1, 2]))
        await until(lambda: prepare.calls >= 2, "the full batch prepared while the model runs")
        assert prepare.during_model_run == 1  # prepared while batch 1 was on the model
        assert len(model.batches) == 1 and model.overlaps == 0  # but not run beside it
        model.gate.set()
        assert await first == [0] and await full == [2, 4]
    assert model.overlaps == 0


async def test_with_two_replicas_two_batches_run_at_once() -> None:
    model = ScriptedModel()
    async with batcher_for(model, max_batch_cost=1, batches_out=2) as batcher:
        await model.hold()
        tasks = [asyncio.create_task(submit(batcher, [i])) for i in (1, 2)]
        await until(lambda: model.running >= 2, "two batches on the model at once")
        model.gate.set()
        assert [await t for t in tasks] == [[2], [4]]
    assert model.overlaps == 1


async def test_a_prepared_batch_whose_clients_left_never_runs() -> None:
    model = ScriptedModel()
    prepare = ScriptedPrepare(model)
    async with batcher_for(model, max_batch_cost=1, pack=prepare) as batcher:
        first = await occupy(model, batcher)
        gone = asyncio.create_task(submit(batcher, [7]))
        # [7] was taken and prepared; it waits for the model.
        await until(lambda: prepare.calls >= 2, "the abandoned request's batch prepared")
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        model.gate.set()
        assert await first == [0]
        assert await submit(batcher, [3]) == [6]
    assert model.batches == [[0], [3]]
