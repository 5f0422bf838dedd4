"""What both phases share: counts, context, the image stream, readiness, bounded dispatch.

Each phase reads images one at a time from the benchmark (in a worker thread), gives every job its
stable id, skips the ids already finished in the run folder, and keeps a bounded number of requests
in flight: enough to keep every editor worker (or the judge's batches) busy, never more than the
service says it can hold. Each finished job is one fsynced line in the phase's log; a job that
fails, even with a bug of ours, becomes a failed record and the run goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from orchestrator.benchmarks import Benchmark, Item
from orchestrator.clients import EditorClient, RewardClient, ServiceCallError
from orchestrator.progress import PhaseProgress
from orchestrator.retry import (
    Retry,
    RetryPolicy,
    classify,
)
from orchestrator.store import Record, RunStore
from orchestrator.thumbs import make_thumbnail

logger = logging.getLogger(__name__)


class ServiceNotReady(RuntimeError):
    """A service did not become ready within the allowed time; the phase cannot start."""


@dataclass(slots=True)
class PhaseCounts:
    """What one phase did in this invocation."""

    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    unscored: int = 0
    missing_edit: int = 0
    retries: int = 0
    requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class PhaseContext:
    benchmark: Benchmark
    items: Sequence[Item]
    store: RunStore
    progress: PhaseProgress
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    retry_failed: bool = False
    ready_timeout_s: float = 600.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def is_finished(record: Record | None, retry_failed: bool) -> bool:
    """A job is finished when it succeeded, or failed permanently (unless asked to retry those)."""
    if record is None:
        return False
    if record.get("status") == "ok":
        return True
    return not record.get("retryable", True) and not retry_failed


async def stream_images(
    benchmark: Benchmark, items: Sequence[Item]
) -> AsyncIterator[tuple[Item, bytes]]:
    """The benchmark's image stream, read in a worker thread so the event loop never blocks."""
    iterator = benchmark.iter_images(items)
    sentinel = object()
    while True:
        pair: Any = await asyncio.to_thread(next, iterator, sentinel)
        if pair is sentinel:
            return
        yield pair


async def wait_until_ready(
    client: EditorClient | RewardClient, timeout_s: float, progress: PhaseProgress
) -> None:
    """Poll /ready (every 2 s) until it answers 200; ServiceNotReady after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        try:
            await client.ready()
            return
        except ServiceCallError as exc:
            if time.monotonic() >= deadline:
                raise ServiceNotReady(
                    f"the {client.service} at {client.base_url} is not ready: {exc.message}"
                ) from None
            if not told:
                progress.note(
                    f"waiting for the {client.service} at {client.base_url}: {exc.message}"
                )
                told = True
        await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def error_record(exc: BaseException) -> tuple[dict[str, Any], bool]:
    """(error field, retryable) of a failed job."""
    if isinstance(exc, ServiceCallError):
        return exc.as_record(), classify(exc) is not Retry.NEVER
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return {
            "service": None,
            "type": "invalid_input",
            "message": f"{where}: {first['msg']}" if where else first["msg"],
            "status": None,
            "param": where or None,
        }, False
    return {
        "service": None,
        "type": "client_error",
        "message": f"{type(exc).__name__}: {exc}",
        "status": None,
        "param": None,
    }, True


def item_fields(item: Item) -> dict[str, Any]:
    return {
        "item_id": item.id,
        "category": item.category,
        "language": item.language,
        "instruction": item.instruction,
    }


class Phase:
    name = "phase"

    def __init__(self, ctx: PhaseContext) -> None:
        self.ctx = ctx
        self.counts = PhaseCounts()
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _dispatch(self, job: Coroutine[Any, Any, None]) -> None:
        """Start ``job`` once a slot is free; at most `concurrency` run at once."""
        assert self._slots is not None
        try:
            await self._slots.acquire()
        except BaseException:
            job.close()  # cancelled while waiting: the job never started
            raise
        task = asyncio.create_task(self._run_slot(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_slot(self, job: Awaitable[None]) -> None:
        assert self._slots is not None
        try:
            await job
        finally:
            self._slots.release()

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _ensure_thumb(self, kind: str, item: Item, data: bytes) -> None:
        relpath = self.ctx.store.thumb_relpath(kind, item.id)
        if self.ctx.store.path(relpath).exists():
            return
        thumb = await asyncio.to_thread(make_thumbnail, data)
        if thumb is not None:
            await asyncio.to_thread(self.ctx.store.write_file, relpath, thumb)

    def _finish(self, ok: bool) -> None:
        if ok:
            self.counts.ok += 1
        else:
            self.counts.failed += 1
        self.ctx.progress.advance(ok=ok)
