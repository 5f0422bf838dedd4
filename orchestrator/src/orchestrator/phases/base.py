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
from typing import Any, TypeAlias

from pydantic import ValidationError

from orchestrator.benchmarks import Benchmark, BenchmarkError, Item
from orchestrator.clients import (
    EditorClient,
    RewardClient,
    ServiceCallError,
    is_released,
    what_to_do,
)
from orchestrator.handover import GpuSharing
from orchestrator.progress import PhaseProgress
from orchestrator.provenance import PhaseCountsRecord
from orchestrator.records import TOO_MANY_INPUTS, ErrorRecord, JobRecord
from orchestrator.retry import (
    Retry,
    RetryPolicy,
    classify,
)
from orchestrator.store import RunStore
from orchestrator.thumbs import make_thumbnail
from shared_schemas import EditorInfo, ModelInfo

logger = logging.getLogger(__name__)

NOTE_EVERY_S = 30.0  # while waiting for a service, say so at least this often


class ServiceNotReady(RuntimeError):
    """A service did not become ready within the allowed time; the phase cannot start."""


class ModelChanged(ServiceCallError):
    """Loaded for a deferred hand-over, a service serves another model than the one this
    phase's job ids were made for (it was restarted with other settings meanwhile)."""

    def __init__(self, service: str, before: ModelInfo | None, after: ModelInfo | None) -> None:
        super().__init__(
            service,
            f"serves {_model_name(after)} after loading, not {_model_name(before)}: run again",
            error_type="model_changed",
        )


class TooManyInputs(Exception):
    """An item with more input images than the editor's family takes (GET /v1/info): recorded
    as failed permanently before anything is sent; the run goes on. The message names the model
    and family the editor reports, and no other: which model takes more is the user's choice."""

    def __init__(self, item_id: str, given: int, limit: int, info: EditorInfo | None) -> None:
        model = info.model.id if info is not None and info.model is not None else "the editor"
        family = info.family if info is not None else None
        served = f"{model} ({family.title})" if family is not None else model
        takes = "1" if limit == 1 else f"at most {limit}"
        super().__init__(
            f"item {item_id!r} has {given} input images; {served} takes {takes}: not edited "
            f"(an editor whose family takes {given} or more, /v1/info family.max_images, "
            "edits it)"
        )


def _model_name(model: ModelInfo | None) -> str:
    return "no model" if model is None else f"{model.id}@{model.revision}"


# What one phase did in this invocation: counted in place in the very record provenance.json
# keeps for it (one declaration of the counts, on disk and at run time).
PhaseCounts: TypeAlias = PhaseCountsRecord


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
    gpu: GpuSharing | None = None  # share_gpu: each phase takes the GPU before its first job


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def is_finished(record: JobRecord | None, retry_failed: bool) -> bool:
    """A job is finished when it succeeded, or failed permanently (unless asked to retry those)."""
    return record is not None and record.finished(retry_failed)


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
    client: EditorClient | RewardClient,
    timeout_s: float,
    progress: PhaseProgress,
    *,
    released_ok: bool = False,
) -> bool:
    """Poll /ready (every 2 s) until it answers 200; ServiceNotReady after ``timeout_s``.

    A service whose model was released will not become ready by itself: with ``released_ok``
    (sharing a GPU, the hand-over loads it) that returns False at once, otherwise it is a
    ServiceNotReady at once. Returns True when ready.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    said: tuple[str, float] | None = None  # (reason, when) of the last line printed
    while True:
        try:
            await client.ready()
            if said is not None:
                progress.note(
                    f"the {client.service} at {client.base_url} is ready "
                    f"(after {time.monotonic() - started:.0f} s)"
                )
            return True
        except ServiceCallError as exc:
            if is_released(exc):
                if released_ok:
                    return False
                raise ServiceNotReady(
                    f"the {client.service} at {client.base_url} has released its model "
                    f"({exc.message}): run with --share-gpu, or POST /v1/model/load to it"
                ) from None
            if exc.status in (401, 403):
                # A refused key does not get better by waiting out --ready-timeout-s.
                raise ServiceNotReady(
                    f"the {client.service} at {client.base_url} refused this client's key "
                    f"(HTTP {exc.status}: {exc.message}): check the API key given for it"
                ) from None
            if exc.status in (404, 405):
                # No such route: nothing at this URL serves the service's API, and waiting out
                # --ready-timeout-s will not make one (a wrong port, another server).
                raise ServiceNotReady(
                    f"the {client.service} at {client.base_url} answers HTTP {exc.status} to "
                    f"its readiness check: no editbench {client.service} service is there; "
                    f"check --{client.service}-url (the address the "
                    "service prints when it starts"
                    + (
                        "; an OpenAI-compatible images endpoint: --editor-api openai and its "
                        "URL ending in /v1)"
                        if client.service == "editor"
                        else ")"
                    )
                ) from None
            now = time.monotonic()
            # One line per wait: when it starts, when the reason changes, then every 30 s.
            if said is None or said[0] != exc.message or now - said[1] >= NOTE_EVERY_S:
                progress.note(
                    f"waiting for the {client.service} at {client.base_url}: {exc.message} "
                    f"({now - started:.0f} s of --ready-timeout-s {timeout_s:.0f})"
                )
                said = (exc.message, now)
            if now >= deadline:
                hint = what_to_do(exc)
                raise ServiceNotReady(
                    f"the {client.service} at {client.base_url} is not ready after "
                    f"{timeout_s:.0f} s: {exc.message}"
                    + (f". {hint[0].upper()}{hint[1:]}" if hint else "")
                ) from None
        await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


MAX_ITEM_ID_CHARS = 1024


class InvalidItem(ValueError):
    """An item that cannot be run as it is (its id is absurdly long): that item fails, with
    this message, and the others run."""


def check_item(item_id: str) -> None:
    if len(item_id) > MAX_ITEM_ID_CHARS:
        raise InvalidItem(
            f"the item id is {len(item_id)} characters long; at most {MAX_ITEM_ID_CHARS}: "
            "shorten it in the benchmark"
        )


def error_record(exc: BaseException) -> tuple[ErrorRecord, bool]:
    """(error field, retryable) of a failed job."""
    if isinstance(exc, ServiceCallError):
        return ErrorRecord.model_validate(exc.as_record()), classify(exc) is not Retry.NEVER
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return ErrorRecord(
            type="invalid_input",
            message=f"{where}: {first['msg']}" if where else first["msg"],
            param=where or None,
        ), False
    if isinstance(exc, TooManyInputs):
        return ErrorRecord(type=TOO_MANY_INPUTS, message=str(exc), param="image"), False
    if isinstance(exc, InvalidItem):
        return ErrorRecord(type="invalid_input", message=str(exc), param="id"), False
    if isinstance(exc, BenchmarkError):  # the run folder refused a write (a link in it)
        return ErrorRecord(type="run_folder", message=str(exc)), True
    return ErrorRecord(type="client_error", message=f"{type(exc).__name__}: {exc}"), True


def item_fields(item: Item) -> dict[str, Any]:
    return {
        "item_id": item.id,
        "category": item.category,
        "language": item.language,
        "instruction": item.instruction,
    }


class Phase:
    name = "phase"
    client: EditorClient | RewardClient

    def __init__(self, ctx: PhaseContext) -> None:
        self.ctx = ctx
        self.counts = PhaseCounts()
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._gpu_due = False  # share_gpu: the GPU is taken before the first job

    async def _wait_for_service(self) -> None:
        """Wait for the service's /ready. Sharing the GPU, a released service will do: it gets
        the GPU before this phase's first job (so a phase with nothing to do takes nothing)."""
        sharing = self.ctx.gpu is not None
        await wait_until_ready(
            self.client, self.ctx.ready_timeout_s, self.ctx.progress, released_ok=sharing
        )
        self._gpu_due = sharing

    async def _take_gpu(self) -> None:
        """The other service releases the GPU, this one loads; then wait until it serves."""
        assert self.ctx.gpu is not None
        self._gpu_due = False
        await self.ctx.gpu.give_to(self.client.service)
        await wait_until_ready(self.client, self.ctx.ready_timeout_s, self.ctx.progress)

    async def _gpu_taken(self) -> None:
        """After a deferred hand-over: check the service still serves what the job ids name."""

    async def _dispatch(self, job: Coroutine[Any, Any, None]) -> None:
        """Start ``job`` once a slot is free; at most `concurrency` run at once."""
        assert self._slots is not None
        try:
            if self._gpu_due:
                await self._take_gpu()
                await self._gpu_taken()
            await self._slots.acquire()
        except BaseException:
            job.close()  # cancelled or failed while waiting: the job never started
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
            try:
                await asyncio.to_thread(self.ctx.store.write_file, relpath, thumb)
            except BenchmarkError as exc:  # a link in the run folder: no thumbnail, go on
                logger.warning("item %r: no thumbnail: %s", item.id, exc)

    def _finish(self, ok: bool) -> None:
        if ok:
            self.counts.ok += 1
        else:
            self.counts.failed += 1
        self.ctx.progress.advance(ok=ok)
