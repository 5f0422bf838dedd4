"""The one admission queue both services use: fair admission, fair order, batches, back-pressure.

Work arrives as submissions (one client request: one edit, or a judge request's items). Each
item becomes a unit with a key (its ``uid``) that travels with it to the runner and back, so
answers are matched to items by key, never by position.

Admission is two-step: ``reserve(n)`` holds ``n`` slots (or refuses: 503 while draining, 413 for
more items than the queue holds, 429 with Retry-After when full) before the caller does any
expensive validation; ``Reservation.submit`` enqueues. Admission is per client (the client the
request carries, service_kit.http.client_identity): a client alone may fill the queue; while other
clients have work waiting, a client beyond its fair share (``capacity`` divided among the clients
waiting) is admitted only into free room, and a client within its share is admitted even when the
queue is full, up to twice ``capacity`` in all. So one client can never hold every slot against a
teammate's single request.

Order is per client too: units are taken client by client, the client served least recently
first (a client never served, or not for a long time, goes next), each client's own units in
the order they came. A client that arrives while another's job runs waits for no more of that
client's jobs.

A ``BatchPolicy`` decides when a batch closes and what a unit costs: the judge closes a batch when
its units' images add up to ``max_batch_cost`` or its oldest unit has waited ``max_wait_s`` and
the model has room; the editor's units cost 1 and each batch is one job. ``batches_out`` batches
may be out on the runners at once (the judge: pipeline depth x replicas; the editor: one per
serving worker), plus ``ahead`` taken early to be packed meanwhile (the judge: one). Nothing
downstream waits for room again: while every runner is busy, units wait here, where they can be
dropped (client gone), expired (past the deadline: 504) or refused cheaply.

``run_batch`` answers each unit by its key with its output or the ServiceError that unit alone
failed with (its batch-mates are answered); a unit it leaves unanswered fails, and a batch that
fails as a whole fails every unit. A batch whose clients have all gone is dropped before it runs,
or cancelled while it runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service_kit.errors import (
    MAX_RETRY_AFTER_S,
    BackendError,
    DeadlineExceeded,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    ServiceError,
)
from service_kit.http.client_identity import ANONYMOUS, current_client
from service_kit.replicas.metrics import AdmissionMetrics

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - the unit of work
O = TypeVar("O")  # noqa: E741 - its result
T = TypeVar("T")
O_co = TypeVar("O_co", covariant=True)

SERVED_MEMORY = 4096  # clients remembered for the order of service (the oldest are forgotten)
Answers = Mapping[int, Any]  # uid -> output or ServiceError


def _one_kind(_item: object) -> Hashable:
    return None


def _unit_cost(_item: object) -> int:
    return 1


@dataclass(frozen=True, slots=True)
class BatchPolicy(Generic[I]):
    """When a batch closes and what a unit costs.

    A batch holds units of one ``key``; it closes when their ``cost`` adds up to
    ``max_batch_cost``, or when its oldest unit has waited ``max_wait_s`` and a runner has room.
    """

    max_batch_cost: int = 1
    max_wait_s: float = 0.0
    key: Callable[[I], Hashable] = _one_kind
    cost: Callable[[I], int] = _unit_cost


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One call of the runner, as seen by each unit it carried."""

    number: int
    size: int
    started: float  # time.monotonic()
    duration_s: float


@dataclass(frozen=True, slots=True)
class Completed(Generic[O_co]):
    output: O_co
    batch: BatchRun
    queued_s: float  # from submission to the start of its batch


@dataclass(eq=False)
class _Submission(Generic[O]):
    label: str
    future: asyncio.Future[list[Completed[O]]]
    uids: list[int]
    submitted_at: float
    deadline: float
    client: str = ANONYMOUS
    results: dict[int, Completed[O]] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Unit(Generic[I, O]):
    uid: int
    item: I
    key: Hashable
    cost: int
    submission: _Submission[O]

    @property
    def client(self) -> str:
        return self.submission.client


class FairOrder:
    """Which client goes next: the one served least recently (never served: first), ties by
    arrival. Remembers the last ``SERVED_MEMORY`` clients served."""

    def __init__(self, memory: int = SERVED_MEMORY) -> None:
        self._served: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._memory = memory

    def served(self, client: str) -> None:
        self._served.pop(client, None)
        self._served[client] = None
        if len(self._served) > self._memory:
            self._served.popitem(last=False)

    def arrange(self, units: Iterable[T], client_of: Callable[[T], str]) -> list[T]:
        """``units`` (oldest first) interleaved one client at a time, clients in the order of
        service, each client's own order kept."""
        by_client: dict[str, collections.deque[T]] = {}
        for unit in units:
            by_client.setdefault(client_of(unit), collections.deque()).append(unit)
        rank = {client: i for i, client in enumerate(self._served)}
        # Never served (-1) first; then least recently served; ties by first arrival (dicts
        # keep insertion order and sorted() is stable).
        clients = sorted(by_client, key=lambda c: rank.get(c, -1))
        out: list[T] = []
        while clients:
            still: list[str] = []
            for client in clients:
                queue = by_client[client]
                out.append(queue.popleft())
                if queue:
                    still.append(client)
            clients = still
        return out


class Reservation(Generic[I, O]):
    """Queue slots held while a request is validated; released if it is never submitted."""

    def __init__(self, queue: AdmissionQueue[I, O], count: int, client: str) -> None:
        self._queue = queue
        self.count = count
        self.client = client
        self.used = False

    async def submit(self, items: Sequence[I], label: str = "") -> list[Completed[O]]:
        """Enqueue the items and wait for all their results, in the order of ``items``."""
        if self.used:
            raise RuntimeError("a reservation is submitted once")
        if len(items) != self.count:
            raise ValueError(f"{self.count} slots were reserved for {len(items)} items")
        self.used = True
        self._queue._unreserve(self.client, self.count)
        return await self._queue._submit(items, label, self.client)


class AdmissionQueue(Generic[I, O]):
    """One consumer task owns the queue; see the module."""

    def __init__(
        self,
        run_batch: Callable[[Any], Awaitable[Answers]],
        *,
        policy: BatchPolicy[I],
        capacity: int,
        timeout_s: float,
        metrics: AdmissionMetrics | None = None,
        pack: Callable[[dict[int, I]], Awaitable[Any]] | None = None,
        batches_out: int | Callable[[], int] = 1,
        ahead: int = 1,
        spare_room: Callable[[], int] = lambda: 0,
        check_ready: Callable[[], None] = lambda: None,
        on_batch: Callable[[int, int, float, bool], None] | None = None,
    ) -> None:
        """``run_batch`` gets the batch ({uid: item}, or what ``pack`` made of it) and answers
        {uid: output or ServiceError}. ``ahead``: batches taken before a runner is free, to be
        packed meanwhile (the judge: 1; the editor: 0, so a job waits in the fair queue until a
        worker is free). ``spare_room()``: slots beyond ``capacity`` while runners
        are idle (the editor counts a free worker as room). ``check_ready()`` raises (503) when
        no work may be admitted (the model released, loading). ``on_batch(size, submissions,
        seconds, ok)``: the service's own batch metrics."""
        if isinstance(batches_out, int):
            if batches_out < 1:
                raise ValueError("batches_out must be at least 1")
            fixed = batches_out
            batches_out = lambda: fixed  # noqa: E731
        if policy.max_batch_cost < 1 or capacity < 1:
            raise ValueError("max_batch_cost and capacity must be at least 1")
        self.policy = policy
        self.capacity = capacity
        self.timeout_s = timeout_s
        self._run_batch = run_batch
        self._pack = pack
        self._ahead = ahead
        self._batches_out: Callable[[], int] = batches_out
        self._spare_room = spare_room
        self._check_ready = check_ready
        self._metrics = metrics
        self._on_batch = on_batch
        self._queue: collections.deque[_Unit[I, O]] = collections.deque()
        self._reserved: collections.Counter[str] = collections.Counter()
        self._order = FairOrder()
        self._uids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._accepting = True  # new reservations are admitted (not draining)
        self._closed = False  # the drain is over: nothing more is submitted
        self._drain_deadline: float | None = None
        self._running = 0  # units in batches being packed or out on a runner
        self._in_flight = 0  # batches being packed or out on a runner
        self._on_runner = 0  # batches out on a runner
        self._runner_free = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._batch_s_ema: float | None = None

    @property
    def batches_out(self) -> int:
        """Batches that may be out on the runners at once now."""
        return max(0, self._batches_out())

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="admission-queue")

    def start_draining(self) -> None:
        """Refuse new requests (503); what was admitted, reserved slots included, still runs."""
        self._accepting = False

    def in_flight(self) -> int:
        """Units admitted and not answered yet: reserved, queued, or in a batch."""
        return sum(self._reserved.values()) + len(self._queue) + self._running

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

    def wake(self) -> None:
        """Something the queue waits on changed (a runner came free, a worker became ready)."""
        self._wakeup.set()
        self._runner_free.set()

    @property
    def depth(self) -> int:
        """Units waiting for a batch (not counting those running)."""
        return len(self._queue)

    def depths(self) -> dict[str, int]:
        """Units waiting, by client."""
        return dict(collections.Counter(u.client for u in self._queue))

    # ----------------------------------------------------------------- admission

    def client_in_flight(self, cost: int = 1) -> int:
        """Units of ``cost`` one client should keep admitted (what /v1/info publishes): a batch
        on every runner and the next ready for each, within what the queue admits without
        refusing (``capacity`` waiting, the batches out and those taken ahead)."""
        per_batch = max(1, self.policy.max_batch_cost // max(1, cost))
        out = max(1, self.batches_out)
        room = self.capacity + (out + self._ahead) * per_batch
        return max(1, min(2 * out * per_batch, room))

    def share(self, client: str) -> int:
        """The most units ``client`` may have waiting while the clients waiting now do:
        ``capacity`` (and the spare room) divided among them, this one counted."""
        waiting = self._waiting_by_client()
        others = sum(1 for c, n in waiting.items() if n and c != client)
        return max(1, math.ceil((self.capacity + self._spare_room()) / (others + 1)))

    @contextlib.asynccontextmanager
    async def reserve(self, count: int) -> AsyncIterator[Reservation[I, O]]:
        """Hold ``count`` queue slots for the current client; raises before any work is done if
        they may not be taken (see the module)."""
        if not self._accepting:
            raise NotReady("the service is shutting down", retry_after_s=30)
        self._check_ready()
        if count > self.capacity:
            raise PayloadTooLarge(
                f"the request has {count} items; the queue holds at most "
                f"{self.capacity}: send fewer items per request",
                param="items",
            )
        client = current_client()
        self._admit(client, count)
        self._reserved[client] += count
        reservation: Reservation[I, O] = Reservation(self, count, client)
        try:
            yield reservation
        finally:
            if not reservation.used:
                self._unreserve(client, count)

    def _admit(self, client: str, count: int) -> None:
        waiting = self._waiting_by_client()
        total = sum(waiting.values())
        room = self.capacity + self._spare_room()
        mine = waiting.get(client, 0)
        within_share = mine + count <= self.share(client)
        if total + count <= room or (within_share and total + count <= 2 * room):
            return
        if self._metrics is not None:
            self._metrics.rejected.labels("queue_full").inc()
        detail = (
            f"{total} items are waiting and the queue holds {room}"
            if within_share
            else f"this client has {mine} items waiting, its share while others wait is "
            f"{self.share(client)}, and the queue ({room}) is full"
        )
        raise QueueFull(detail, retry_after_s=self.retry_after_s())

    def _waiting_by_client(self) -> collections.Counter[str]:
        waiting = collections.Counter(u.client for u in self._queue)
        waiting.update(self._reserved)
        return waiting

    def _unreserve(self, client: str, count: int) -> None:
        self._reserved[client] -= count
        if self._reserved[client] <= 0:
            del self._reserved[client]

    def retry_after_s(self) -> float:
        """A guess at when a slot frees up: the batches ahead times the recent batch time,
        shared by the runners."""
        per_batch = self._batch_s_ema or 1.0
        waiting = sum(u.cost for u in self._queue)
        batches_ahead = waiting / self.policy.max_batch_cost + 1
        runners = max(1, self.batches_out)
        return min(MAX_RETRY_AFTER_S, max(1.0, per_batch * batches_ahead / runners))

    async def _submit(self, items: Sequence[I], label: str, client: str) -> list[Completed[O]]:
        if self._closed:  # a slot reserved before a drain began still runs; not after it
            raise NotReady("the service is shutting down", retry_after_s=30)
        if not items:
            return []
        now = time.monotonic()
        uids = [next(self._uids) for _ in items]
        submission: _Submission[O] = _Submission(
            label=label,
            future=asyncio.get_running_loop().create_future(),
            uids=uids,
            submitted_at=now,
            deadline=now + self.timeout_s,
            client=client,
        )
        policy = self.policy
        self._queue.extend(
            _Unit(uid, item, policy.key(item), max(1, policy.cost(item)), submission)
            for uid, item in zip(uids, items, strict=True)
        )
        self._depth_changed()
        self._wakeup.set()
        try:
            return await asyncio.shield(submission.future)
        except asyncio.CancelledError:
            if not submission.future.done():
                # The client went away: its queued units are dropped at the next pass.
                submission.future.cancel()
                if self._metrics is not None:
                    self._metrics.disconnects.inc()
                logger.info("%s: client went away; dropping its queued work", label)
                self._wakeup.set()
            raise

    # ----------------------------------------------------------------- the consumer

    def _slots(self) -> int:
        """Batches that may be taken now: out on a runner, plus those taken ahead."""
        return self.batches_out + self._ahead

    async def _consume(self) -> None:
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            self._drop_dead(now)
            timeout: float | None = None
            if self._queue:
                timeout = max(0.01, min(u.submission.deadline for u in self._queue) - now)
                if self._in_flight < self._slots():
                    batch, wait_s = self._closable(now)
                    if batch is not None:
                        self._start(batch)
                        continue
                    timeout = min(timeout, max(wait_s, 0.01))
            with contextlib.suppress(TimeoutError):
                # Woken by new units, a client gone, or a runner coming free.
                await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)

    def _closable(self, now: float) -> tuple[list[_Unit[I, O]] | None, float]:
        """The batch that may leave now, or how long until the oldest may leave partial."""
        ordered = self._order.arrange(self._queue, _client_of)
        key = ordered[0].key  # the kind of the next client's oldest unit
        same_kind = [u for u in ordered if u.key == key]
        oldest = min(u.submission.submitted_at for u in same_kind)
        wait_s = oldest + self.policy.max_wait_s - now
        if sum(u.cost for u in same_kind) >= self.policy.max_batch_cost:
            return self._take(same_kind), wait_s
        if wait_s <= 0 and self._in_flight < self.batches_out:
            return self._take(same_kind), wait_s
        return None, wait_s

    def _take(self, units: list[_Unit[I, O]]) -> list[_Unit[I, O]]:
        """Units in fair order while the budget allows (one unit always goes, even if over)."""
        batch: list[_Unit[I, O]] = []
        cost = 0
        for unit in units:
            if cost >= self.policy.max_batch_cost:
                break  # full: nothing more can go
            if not batch or cost + unit.cost <= self.policy.max_batch_cost:
                batch.append(unit)
                cost += unit.cost
        for unit in batch:
            self._order.served(unit.client)
        taken = {unit.uid for unit in batch}
        self._queue = collections.deque(u for u in self._queue if u.uid not in taken)
        self._depth_changed()
        return batch

    def _start(self, batch: list[_Unit[I, O]]) -> None:
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
            self._wakeup.set()  # a runner is free: a partial batch may leave now

    def _drop_dead(self, now: float) -> None:
        """Drop units whose submission is answered (failed, cancelled) or past its deadline."""
        live: collections.deque[_Unit[I, O]] = collections.deque()
        for unit in self._queue:
            submission = unit.submission
            if submission.future.done():
                continue
            if now > submission.deadline:
                if self._metrics is not None:
                    self._metrics.rejected.labels("deadline").inc()
                waited = now - submission.submitted_at
                _fail(submission, DeadlineExceeded(f"the request waited {waited:.0f}s unstarted"))
                continue
            live.append(unit)
        if len(live) != len(self._queue):
            self._queue = live
            self._depth_changed()

    def _depth_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.queued(self.depths())

    async def _on_a_runner(self) -> None:
        """Wait until fewer than ``batches_out`` batches are out on a runner, then count one
        (``batches_out`` may change: a replica restarting; it is read again every second)."""
        while self._on_runner >= self.batches_out:
            self._runner_free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._runner_free.wait(), timeout=1.0)
        self._on_runner += 1

    def _off_the_runner(self) -> None:
        self._on_runner -= 1
        self._runner_free.set()

    async def _run(self, batch: list[_Unit[I, O]]) -> None:
        number = next(self._numbers)
        submissions = {id(u.submission): u.submission for u in batch}
        labels = ", ".join(s.label for s in submissions.values())
        started = time.monotonic()
        try:
            items = {unit.uid: unit.item for unit in batch}
            packed = await self._pack(items) if self._pack is not None else items
            await self._on_a_runner()
            try:
                if all(s.future.done() for s in submissions.values()):
                    logger.info("batch %d (%s): every client went away; not run", number, labels)
                    return
                started = time.monotonic()
                for unit in batch:
                    if self._metrics is not None:
                        waited = started - unit.submission.submitted_at
                        self._metrics.waited(unit.client, waited)
                answers = await self._unless_abandoned(self._run_batch(packed), submissions)
                if answers is None:
                    logger.info("batch %d (%s): every client went away; cancelled", number, labels)
                    return
            finally:
                self._off_the_runner()
        except asyncio.CancelledError:  # stopped while it ran: nobody may hang
            error = NotReady("the service is shutting down", retry_after_s=10)
            self._finish_failed(batch, number, started, error, labels)
            raise
        except ServiceError as exc:
            self._finish_failed(batch, number, started, exc, labels)
            return
        except Exception:
            logger.exception("batch %d (%s) failed", number, labels)
            self._finish_failed(batch, number, started, BackendError("the model failed"), labels)
            return
        duration = time.monotonic() - started
        self._record(len(batch), len(submissions), duration, ok=True)
        logger.debug("batch %d: %d units (%s) in %.3fs", number, len(batch), labels, duration)
        run = BatchRun(number=number, size=len(batch), started=started, duration_s=duration)
        for unit in batch:
            output = answers.get(unit.uid, _UNANSWERED)
            if output is _UNANSWERED:
                output = BackendError("the model gave no answer for this item")
            if isinstance(output, ServiceError):  # this unit alone failed; the rest are answered
                logger.warning(
                    "batch %d: a unit of %s failed: %s", number, unit.submission.label, output
                )
                _fail(unit.submission, output)
            else:
                _deliver(unit, Completed(output, run, started - unit.submission.submitted_at))

    @staticmethod
    async def _unless_abandoned(
        work: Awaitable[Answers], submissions: dict[int, _Submission[O]]
    ) -> Answers | None:
        """Await the runner, or cancel it (None) once every client of the batch has gone."""
        running = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(asyncio.wait([s.future for s in submissions.values()]))
        try:
            await asyncio.wait({running, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            running.cancel()
            raise
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
        if self._on_batch is not None:
            self._on_batch(size, submissions, duration, ok)


_UNANSWERED: Any = object()


def _client_of(unit: _Unit[Any, Any]) -> str:
    return unit.client


def _deliver(unit: _Unit[I, O], completed: Completed[O]) -> None:
    submission = unit.submission
    if submission.future.done():
        return  # failed or abandoned meanwhile
    submission.results[unit.uid] = completed
    if len(submission.results) == len(submission.uids):
        submission.future.set_result([submission.results[uid] for uid in submission.uids])


def _fail(submission: _Submission[O], error: ServiceError) -> None:
    if not submission.future.done():
        submission.future.set_exception(error)
