"""Dynamic micro-batching: work units from every client gathered into one call of the model.

One consumer task owns the queue. A batch holds units of one kind (``key``) and closes when its
units' ``cost`` adds up to ``max_batch_cost`` (the judge: images to prefill), or when its oldest
unit has waited ``max_wait_s`` and the model has room for it. A batch goes through two stages:
``pack`` (in this process, e.g. images to pixels for a worker) and ``run_batch`` (the model).

The batcher is the one owner of back-pressure. ``batches_out`` batches may be out on the model at
once (the judge: its pipeline depth times its replicas, each replica holding one batch on the
model and the next being prepared in its worker), and one more is packed meanwhile; while all of
them are out, units pile up into full batches, and the bounded queue (``capacity``) refuses the
rest with 429. Nothing downstream waits for room again. /v1/info shows ``batches_out`` so
clients size their requests in flight from it.

Admission is two-step: ``reserve(n)`` holds ``n`` slots of the bounded queue (or refuses with
QueueFull) before the caller does any expensive validation, and ``Reservation.submit`` enqueues.
A submission (one client request) may span several batches; it is answered when its last unit
is. ``run_batch`` answers each unit with its output or with the ServiceError that unit alone
failed with (its batch-mates are answered); a batch that fails as a whole, or whose results do
not match its length, fails every unit. A submission whose client has gone (its awaiting task
was cancelled) or whose deadline has passed is dropped before it reaches the model; a packed
batch whose clients have all gone is dropped before it runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from service_kit.errors import (
    MAX_RETRY_AFTER_S,
    BackendError,
    DeadlineExceeded,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    ServiceError,
)
from service_kit.http.fairness import ANONYMOUS, current_client, round_robin

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - the unit of work
O = TypeVar("O")  # noqa: E741 - its result
P = TypeVar("P")  # a prepared batch
O_co = TypeVar("O_co", covariant=True)


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One call of the model, as seen by each unit it carried."""

    number: int
    size: int
    started: float  # time.monotonic()
    duration_s: float


@dataclass(frozen=True, slots=True)
class Completed(Generic[O_co]):
    output: O_co
    batch: BatchRun
    queued_s: float  # from submission to the start of its batch


class BatchObserver(Protocol):
    """What the batcher reports (metrics); every method must be cheap and never raise."""

    def batch_done(self, size: int, submissions: int, seconds: float, ok: bool) -> None: ...
    def queue_depth(self, by_client: Mapping[str, int]) -> None: ...
    def queue_wait(self, seconds: float, client: str) -> None: ...
    def rejected(self, reason: str) -> None: ...
    def abandoned(self) -> None: ...


class _NullObserver:
    def batch_done(self, size: int, submissions: int, seconds: float, ok: bool) -> None: ...
    def queue_depth(self, by_client: Mapping[str, int]) -> None: ...
    def queue_wait(self, seconds: float, client: str) -> None: ...
    def rejected(self, reason: str) -> None: ...
    def abandoned(self) -> None: ...


@dataclass(eq=False)
class _Submission(Generic[O]):
    label: str
    future: asyncio.Future[list[Completed[O]]]
    results: list[Completed[O] | None]
    submitted_at: float
    deadline: float
    client: str = ANONYMOUS  # who sent it: batches take clients in turn
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.results)


@dataclass(eq=False, slots=True)
class _Unit(Generic[I, O]):
    item: I
    key: Hashable
    submission: _Submission[O]
    index: int
    cost: int


class Reservation(Generic[I, O]):
    """Queue slots held while a request is validated; released if it is never submitted."""

    def __init__(self, batcher: MicroBatcher[I, O], count: int) -> None:
        self._batcher = batcher
        self.count = count
        self.used = False

    async def submit(self, items: Sequence[I], label: str = "") -> list[Completed[O]]:
        """Enqueue the items and wait for all their results, in order."""
        if self.used:
            raise RuntimeError("a reservation is submitted once")
        if len(items) != self.count:
            raise ValueError(f"{self.count} slots were reserved for {len(items)} items")
        self.used = True
        self._batcher._reserved -= self.count
        return await self._batcher._submit(items, label)


class MicroBatcher(Generic[I, O]):
    def __init__(
        self,
        run_batch: Callable[[Any], Awaitable[Sequence[O | ServiceError]]],
        *,
        pack: Callable[[list[I]], Awaitable[Any]] | None = None,
        max_batch_cost: int,
        max_wait_s: float,
        capacity: int,
        timeout_s: float,
        key: Callable[[I], Hashable] = lambda _item: None,
        cost: Callable[[I], int] = lambda _item: 1,
        observer: BatchObserver | None = None,
        batches_out: int = 1,
    ) -> None:
        if max_batch_cost < 1 or capacity < 1 or batches_out < 1:
            raise ValueError("max_batch_cost, capacity and batches_out must be at least 1")
        self.batches_out = batches_out
        self._run_batch = run_batch
        self._pack = pack
        self.max_batch_cost = max_batch_cost
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.timeout_s = timeout_s
        self._key = key
        self._cost = cost
        self._observer: BatchObserver = observer or _NullObserver()
        self._queue: collections.deque[_Unit[I, O]] = collections.deque()
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._accepting = True  # new reservations are admitted (not draining)
        self._closed = False  # the drain is over: nothing more is submitted
        self._drain_deadline: float | None = None
        self._running = 0  # units in batches being packed or out on the model
        self._in_flight = 0  # batches being packed or out on the model
        self._slots = asyncio.Semaphore(batches_out + 1)  # out, and one more being packed
        self._model_slots = asyncio.Semaphore(batches_out)  # out on the model
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._batch_s_ema: float | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="micro-batcher")

    def start_draining(self) -> None:
        """Refuse new requests (503); what was admitted, reserved slots included, still runs."""
        self._accepting = False

    def in_flight(self) -> int:
        """Units admitted and not answered yet: reserved, queued, or in a batch."""
        return self._reserved + len(self._queue) + self._running

    def fail_remaining(self) -> None:
        """End the drain: answer every queued unit and running batch 503; submit nothing more."""
        self._accepting = False
        self._closed = True
        self._drain_deadline = time.monotonic()
        for unit in list(self._queue):
            _fail(unit.submission, NotReady("the service is shutting down", retry_after_s=10))
        self._queue.clear()
        self._depth_changed()
        for task in list(self._tasks):
            task.cancel()  # a cancelled batch answers its requests 503

    async def stop(self, drain_timeout_s: float) -> None:
        """Refuse new work, let admitted work finish (up to ``drain_timeout_s`` after the drain
        began, which may have been earlier), fail what is left."""
        self._accepting = False
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + drain_timeout_s
        while (self._queue or self._running) and time.monotonic() < self._drain_deadline:
            await asyncio.sleep(0.05)
        self.fail_remaining()
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def depth(self) -> int:
        """Units waiting for a batch (not counting the one running)."""
        return len(self._queue)

    # ----------------------------------------------------------------- admission

    @contextlib.asynccontextmanager
    async def reserve(self, count: int) -> AsyncIterator[Reservation[I, O]]:
        """Hold ``count`` queue slots; raises before any work is done if they are not free."""
        if not self._accepting:
            raise NotReady("the service is shutting down", retry_after_s=30)
        if count > self.capacity:
            raise PayloadTooLarge(
                f"the request has {count} items; the queue holds at most "
                f"{self.capacity}: send fewer items per request",
                param="items",
            )
        waiting = len(self._queue) + self._reserved
        if waiting + count > self.capacity:
            self._observer.rejected("queue_full")
            raise QueueFull(
                f"{waiting} items are waiting and the queue holds {self.capacity}",
                retry_after_s=self.retry_after_s(),
            )
        self._reserved += count
        reservation: Reservation[I, O] = Reservation(self, count)
        try:
            yield reservation
        finally:
            if not reservation.used:
                self._reserved -= count

    def retry_after_s(self) -> float:
        """A guess at when a slot frees up: the batches ahead times the recent batch time."""
        per_batch = self._batch_s_ema or 1.0
        waiting = sum(u.cost for u in self._queue)
        batches_ahead = waiting / self.max_batch_cost + 1
        return min(MAX_RETRY_AFTER_S, max(1.0, per_batch * batches_ahead))

    async def _submit(self, items: Sequence[I], label: str) -> list[Completed[O]]:
        if self._closed:  # a slot reserved before a drain began still runs; not after it
            raise NotReady("the service is shutting down", retry_after_s=30)
        if not items:
            return []
        now = time.monotonic()
        submission: _Submission[O] = _Submission(
            label=label,
            future=asyncio.get_running_loop().create_future(),
            results=[None] * len(items),
            submitted_at=now,
            deadline=now + self.timeout_s,
            client=current_client(),
        )
        self._queue.extend(
            _Unit(item, self._key(item), submission, i, max(1, self._cost(item)))
            for i, item in enumerate(items)
        )
        self._depth_changed()
        self._wakeup.set()
        try:
            return await asyncio.shield(submission.future)
        except asyncio.CancelledError:
            if not submission.future.done():
                # The client went away: its queued units are dropped at the next batch.
                submission.future.cancel()
                self._observer.abandoned()
                logger.info("%s: client went away; dropping its queued questions", label)
            raise

    # ----------------------------------------------------------------- the consumer

    async def _consume(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            self._running += len(batch)
            self._in_flight += 1
            task = asyncio.create_task(self._run_then_free(batch), name="batch")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_then_free(self, batch: list[_Unit[I, O]]) -> None:
        try:
            await self._run(batch)
        finally:
            self._running -= len(batch)
            self._in_flight -= 1
            self._slots.release()
            self._wakeup.set()  # a replica is free: a partial batch may leave now

    async def _next_batch(self) -> list[_Unit[I, O]]:
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            self._drop_dead(now)
            if self._queue:
                oldest = self._queue[0]
                same_kind = sum(u.cost for u in self._queue if u.key == oldest.key)
                wait_s = oldest.submission.submitted_at + self.max_wait_s - now
                if same_kind >= self.max_batch_cost:
                    return self._take(oldest.key)
                if wait_s <= 0 and self._in_flight < self.batches_out:
                    return self._take(oldest.key)
                with contextlib.suppress(TimeoutError):
                    # Woken by new units or by a replica coming free.
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait_s, 0.05))
            else:
                await self._wakeup.wait()

    def _drop_dead(self, now: float) -> None:
        """Drop units whose submission is answered (failed, cancelled) or past its deadline."""
        live: collections.deque[_Unit[I, O]] = collections.deque()
        for unit in self._queue:
            submission = unit.submission
            if submission.future.done():
                continue
            if now > submission.deadline:
                self._observer.rejected("deadline")
                waited = now - submission.submitted_at
                _fail(submission, DeadlineExceeded(f"the request waited {waited:.0f}s unscored"))
                continue
            live.append(unit)
        if len(live) != len(self._queue):
            self._queue = live
            self._depth_changed()

    def _take(self, key: Hashable) -> list[_Unit[I, O]]:
        batch: list[_Unit[I, O]] = []
        cost = 0
        # Fair sharing: clients in turn, each client's units oldest first
        # (service_kit.http.fairness).
        for unit in round_robin([u for u in self._queue if u.key == key], _client_of):
            # While the budget allows (one unit always goes, even if over it).
            if cost >= self.max_batch_cost:
                break  # full: nothing more can go
            if not batch or cost + unit.cost <= self.max_batch_cost:
                batch.append(unit)
                cost += unit.cost
        taken = {id(u) for u in batch}
        self._queue = collections.deque(u for u in self._queue if id(u) not in taken)
        self._depth_changed()
        return batch

    def _depth_changed(self) -> None:
        by_client: collections.Counter[str] = collections.Counter()
        for unit in self._queue:
            by_client[unit.submission.client] += 1
        self._observer.queue_depth(by_client)

    async def _run(self, batch: list[_Unit[I, O]]) -> None:
        number = next(self._numbers)
        submissions = {id(u.submission): u.submission for u in batch}
        labels = ", ".join(s.label for s in submissions.values())
        started = time.monotonic()
        try:
            items = [u.item for u in batch]
            packed = await self._pack(items) if self._pack is not None else items
            async with self._model_slots:
                if all(s.future.done() for s in submissions.values()):
                    logger.info("batch %d (%s): every client went away; not run", number, labels)
                    return
                started = time.monotonic()
                for unit in batch:
                    waited = started - unit.submission.submitted_at
                    self._observer.queue_wait(waited, unit.submission.client)
                outputs = await self._unless_abandoned(self._run_batch(packed), submissions)
                if outputs is None:
                    logger.info("batch %d (%s): every client went away; cancelled", number, labels)
                    return
            if len(outputs) != len(batch):
                raise BackendError(
                    f"the model returned {len(outputs)} results for a batch of {len(batch)}"
                )
        except asyncio.CancelledError:  # stopped while the model ran: nobody may hang
            error = NotReady("the service is shutting down", retry_after_s=10)
            self._finish_failed(batch, number, started, error, labels)
            raise
        except ServiceError as exc:
            self._finish_failed(batch, number, started, exc, labels)
            return
        except Exception:
            logger.exception("batch %d (%s) failed", number, labels)
            self._finish_failed(batch, number, started, BackendError("the judge failed"), labels)
            return
        duration = time.monotonic() - started
        self._record(len(batch), len(submissions), duration, ok=True)
        logger.debug("batch %d: %d questions (%s) in %.3fs", number, len(batch), labels, duration)
        run = BatchRun(number=number, size=len(batch), started=started, duration_s=duration)
        for unit, output in zip(batch, outputs, strict=True):
            if isinstance(output, ServiceError):  # this unit alone failed; the rest are answered
                logger.warning(
                    "batch %d: a unit of %s failed: %s",
                    number,
                    unit.submission.label,
                    output.message,
                )
                _fail(unit.submission, output)
            else:
                _deliver(unit, Completed(output, run, started - unit.submission.submitted_at))

    @staticmethod
    async def _unless_abandoned(
        work: Awaitable[Sequence[O | ServiceError]], submissions: dict[int, _Submission[O]]
    ) -> Sequence[O | ServiceError] | None:
        """Await the model, or cancel it (None) once every client of the batch has gone."""
        running = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(asyncio.wait([s.future for s in submissions.values()]))
        try:
            await asyncio.wait({running, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if running.done():
            return running.result()
        if all(s.future.cancelled() for s in submissions.values()):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            return None
        return await running  # answered or failed elsewhere: let this batch finish

    def _finish_failed(
        self,
        batch: list[_Unit[I, O]],
        number: int,
        started: float,
        error: ServiceError,
        labels: str,
    ) -> None:
        duration = time.monotonic() - started
        submissions = {id(u.submission): u.submission for u in batch}
        self._record(len(batch), len(submissions), duration, ok=False)
        logger.error("batch %d (%s) failed: %s", number, labels, error.message)
        for submission in submissions.values():
            _fail(submission, error)

    def _record(self, size: int, submissions: int, duration: float, *, ok: bool) -> None:
        ema = self._batch_s_ema
        self._batch_s_ema = duration if ema is None else 0.8 * ema + 0.2 * duration
        self._observer.batch_done(size, submissions, duration, ok)


def _client_of(unit: _Unit[Any, Any]) -> str:
    return unit.submission.client


def _deliver(unit: _Unit[I, O], completed: Completed[O]) -> None:
    submission = unit.submission
    if submission.future.done():
        return  # failed or abandoned meanwhile
    submission.results[unit.index] = completed
    submission.remaining -= 1
    if submission.remaining == 0:
        submission.future.set_result([r for r in submission.results if r is not None])


def _fail(submission: _Submission[O], error: ServiceError) -> None:
    if not submission.future.done():
        submission.future.set_exception(error)
