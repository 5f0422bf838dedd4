"""Phase 2: every (source, edited, instruction) through POST /v1/scores, in small batches,
with the item's further input images and reference image where its benchmark has them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from orchestrator.benchmarks import Item, item_relpath, resolve_inside
from orchestrator.benchmarks.base import legacy_item_relpath
from orchestrator.benchmarks.items import JUDGE_VARIANT
from orchestrator.clients import RewardClient, ServiceCallError
from orchestrator.jobs import judge_key, score_job_id, sha256_hex
from orchestrator.phases.base import (
    ModelChanged,
    Phase,
    PhaseContext,
    PhaseCounts,
    error_record,
    is_finished,
    now_iso,
    stream_images,
)
from orchestrator.records import ErrorRecord, ScoreJobFields, ScoreRecord
from orchestrator.retry import (
    CallStats,
    ReadinessGate,
    call_with_retry,
)
from orchestrator.store import RecordLog, latest_by_job, latest_ok_by_item
from orchestrator.thumbs import INPUT_ROLES
from orchestrator.wording import counted
from shared_schemas import (
    ItemScore,
    ModelInfo,
    ProtocolInfo,
    RewardInfo,
    ScoreItem,
    ScoreMode,
    ScoreRequest,
)
from shared_schemas.scores import ProtocolDefinition

logger = logging.getLogger(__name__)

EDITED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(slots=True)
class _ScoreJob:
    item: Item
    job_id: str
    source: bytes
    edited: bytes
    source_sha256: str
    edited_sha256: str
    edited_ref: str
    edit_job_id: str | None
    inputs: list[bytes]  # further input images after the source, in order
    reference: bytes | None


def find_edited_file(
    edited_dir: Path, item: Item, *, allow_outside_paths: bool = False
) -> Path | None:
    """``DIR/<item id>.png`` (or .jpg/.jpeg/.webp), else the run folder's safe name for the id.
    A name that leads out of DIR (an id with '..', a symlink) is not used unless allowed."""
    for stem in dict.fromkeys((item.id, item_relpath(item.id), legacy_item_relpath(item.id))):
        for suffix in EDITED_SUFFIXES:
            try:
                candidate = resolve_inside(
                    edited_dir, f"{stem}{suffix}", allow_outside=allow_outside_paths
                )
            except (ValueError, OSError) as exc:  # OSError: a name too long for the system
                logger.warning("item %r: not using its edited image: %s", item.id, exc)
                continue
            try:
                if candidate.is_file():
                    return candidate
            except OSError:
                continue
    return None


def judge_variant(item: Item) -> str | None:
    """The variant of the protocol's questions the judge asks of the item, as its loader
    named it (KRIS-Bench's temporal frames), if any."""
    value = item.extra.get(JUDGE_VARIANT)
    return value if isinstance(value, str) and value else None


class ScorePhase(Phase):
    """Phase 2: every (source, edited, instruction) through POST /v1/scores, in small batches."""

    name = "score"
    client: RewardClient

    def __init__(
        self,
        ctx: PhaseContext,
        client: RewardClient,
        *,
        protocol: str,
        mode: ScoreMode,
        max_new_tokens: int,
        items_per_request: int = 4,
        concurrency: int | None = None,
        edited_dir: Path | None = None,
        allow_outside_paths: bool = False,
        log: RecordLog[ScoreRecord] | None = None,
    ) -> None:
        """``log``: where records go (default the run's scores.jsonl; rescore's rescores.jsonl).
        A job finished in the run's own scores.jsonl is finished for any log."""
        super().__init__(ctx)
        self.log = log if log is not None else ctx.store.scores
        self.client = client
        self.protocol = protocol
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.items_per_request = items_per_request
        self.concurrency_override = concurrency
        self.edited_dir = edited_dir
        self.allow_outside_paths = allow_outside_paths
        self.info: RewardInfo | None = None
        self.protocol_info: ProtocolInfo | None = None
        self.protocol_definition: ProtocolDefinition | None = None
        self.gate = ReadinessGate("reward", client.is_ready, ctx.policy.probe_interval_s)

    def default_concurrency(self, info: RewardInfo) -> int:
        """As many requests as carry the items the judge's /v1/info says a client should keep
        in flight for this protocol (its admission queue decides); one per replica from a judge
        too old to say."""
        items = info.client_in_flight.get(self.protocol, 0)
        if not items:
            return max(1, len(info.devices))
        return max(1, items // self.items_per_request)

    async def prepare(self) -> tuple[RewardInfo, ProtocolInfo | None]:
        await self._wait_for_service()
        self.info = await self._fetch_info()
        if self._gpu_due and self.info.model is None:
            # Job ids name the judge, and one never loaded is not known yet: load it now.
            await self._take_gpu()
            self.info = await self._fetch_info()
        if self.info.protocols and self.protocol not in self.info.protocols:
            raise ServiceCallError(
                "reward",
                f"unknown judge protocol {self.protocol!r}; the service has: "
                f"{', '.join(self.info.protocols)}",
                error_type="unknown_protocol",
            )
        try:
            protocols = await call_with_retry(
                self.client.protocols,
                policy=self.ctx.policy,
                label="reward /v1/protocols",
                sleep=self.ctx.sleep,
            )
        except ServiceCallError as exc:
            logger.warning("reward /v1/protocols unavailable (%s): protocol hash from answers", exc)
        else:
            self.protocol_info = next(
                (p for p in protocols.protocols if p.name == self.protocol), None
            )
        try:
            self.protocol_definition = await self.client.protocol(self.protocol)
        except ServiceCallError as exc:
            logger.info("no protocol definition from the reward service (%s)", exc)
        return self.info, self.protocol_info

    async def _fetch_info(self) -> RewardInfo:
        return await call_with_retry(
            self.client.info, policy=self.ctx.policy, label="reward /v1/info", sleep=self.ctx.sleep
        )

    async def _gpu_taken(self) -> None:
        before = self.info
        self.info = await self._fetch_info()
        if before is not None and judge_key(before.model) != judge_key(self.info.model):
            raise ModelChanged("reward", before.model, self.info.model)

    def _edited_sources(self) -> dict[str, tuple[Path, str, str | None]]:
        """item id -> (edited file, reference for records, edit job id)."""
        found: dict[str, tuple[Path, str, str | None]] = {}
        if self.edited_dir is not None:
            for item in self.ctx.items:
                path = find_edited_file(
                    self.edited_dir, item, allow_outside_paths=self.allow_outside_paths
                )
                if path is not None:
                    found[item.id] = (path, str(path), None)
            return found
        latest_ok = latest_ok_by_item(self.ctx.store.edits.read())
        for item in self.ctx.items:
            record = latest_ok.get(item.id)
            if record is None or record.image is None:
                continue
            if self.ctx.store.has_file(record.image):  # inside, never through a link
                found[item.id] = (self.ctx.store.path(record.image), record.image, record.job_id)
        return found

    async def run(self) -> PhaseCounts:
        if self.info is None:
            await self.prepare()
        assert self.info is not None
        info = self.info
        concurrency = self.concurrency_override or self.default_concurrency(info)
        self._slots = asyncio.Semaphore(concurrency)
        edited = await asyncio.to_thread(self._edited_sources)
        items = [item for item in self.ctx.items if item.id in edited]
        self.counts.missing_edit = len(self.ctx.items) - len(items)
        if self.counts.missing_edit:
            self.ctx.progress.note(
                f"{counted(self.counts.missing_edit, 'item')} without an edited image: not scored"
            )
        logger.info(
            "score phase: %d items, %d per request, %d requests in flight",
            len(items),
            self.items_per_request,
            concurrency,
        )
        done = latest_by_job(await asyncio.to_thread(self._finished_records))
        protocol_hash = self.protocol_info.hash if self.protocol_info else None
        self.counts.planned = len(items)
        self.ctx.progress.start("score", len(items))
        batch: list[_ScoreJob] = []
        try:
            async for item, source in stream_images(self.ctx.benchmark, items):
                await self._ensure_thumb("source", item, source)
                path, ref, edit_job = edited[item.id]
                edited_bytes = await asyncio.to_thread(path.read_bytes)
                if self.edited_dir is not None:
                    await self._ensure_thumb("edited", item, edited_bytes)
                inputs, reference = await asyncio.to_thread(self._judged_images, item)
                for role, data in zip(INPUT_ROLES, inputs, strict=False):
                    await self._ensure_thumb(role, item, data)
                if reference is not None:
                    await self._ensure_thumb("reference", item, reference)
                job = _ScoreJob(
                    item=item,
                    job_id="",
                    source=source,
                    edited=edited_bytes,
                    source_sha256=sha256_hex(source),
                    edited_sha256=sha256_hex(edited_bytes),
                    edited_ref=ref,
                    edit_job_id=edit_job,
                    inputs=inputs,
                    reference=reference,
                )
                job.job_id = score_job_id(
                    item_id=item.id,
                    source_sha256=job.source_sha256,
                    edited_sha256=job.edited_sha256,
                    instruction=item.instruction,
                    category=item.category,
                    hints=item.hints,
                    protocol=self.protocol,
                    protocol_hash=protocol_hash,
                    mode=self.mode,
                    max_new_tokens=self.max_new_tokens,
                    judge_model=info.model,
                    input_sha256=[sha256_hex(data) for data in inputs],
                    reference_sha256=sha256_hex(reference) if reference is not None else None,
                    variant=judge_variant(item),
                )
                if is_finished(done.get(job.job_id), self.ctx.retry_failed):
                    self.counts.skipped += 1
                    self.ctx.progress.advance(skipped=True)
                    continue
                batch.append(job)
                if len(batch) >= self.items_per_request:
                    await self._dispatch(self._score_batch(batch))
                    batch = []
            if batch:
                await self._dispatch(self._score_batch(batch))
            await self._drain()
        except BaseException:
            await self._cancel_all()
            raise
        finally:
            await self.gate.close()
            self.ctx.progress.finish()
        return self.counts

    def _judged_images(self, item: Item) -> tuple[list[bytes], bytes | None]:
        """The item's further inputs and reference image, sent to the judge beside the source
        and the edit (its protocol's questions show those they name)."""
        benchmark = self.ctx.benchmark
        return benchmark.input_images(item), benchmark.reference_image(item)

    def _finished_records(self) -> list[ScoreRecord]:
        own = self.ctx.store.scores.read()
        return own if self.log is self.ctx.store.scores else [*own, *self.log.read()]

    async def _score_batch(self, batch: list[_ScoreJob]) -> None:
        stats = CallStats()
        try:
            request = ScoreRequest(
                items=[
                    ScoreItem(
                        id=job.job_id,
                        source_image=job.source,
                        edited_image=job.edited,
                        instruction=job.item.instruction,
                        category=job.item.category,
                        hints=job.item.hints,
                        input_images=job.inputs,
                        reference_image=job.reference,
                        variant=judge_variant(job.item),
                    )
                    for job in batch
                ],
                protocol=self.protocol,
                mode=self.mode,
                max_new_tokens=self.max_new_tokens,
            )
            self.counts.requests += 1
            response = await call_with_retry(
                lambda: self.client.score(request),
                policy=self.ctx.policy,
                gate=self.gate,
                label=f"score {len(batch)} item(s) [{batch[0].job_id}...]",
                stats=stats,
                sleep=self.ctx.sleep,
            )
            by_id = {result.id: result for result in response.results}
            if len(response.results) != len(batch) or set(by_id) != {j.job_id for j in batch}:
                raise ServiceCallError(
                    "reward",
                    f"answered {len(response.results)} result(s) for {len(batch)} item(s), "
                    "or with ids that were not asked for",
                    error_type="invalid_response",
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error, retryable = error_record(exc)
            if len(batch) > 1 and not retryable:
                # One bad item must not fail its neighbours: ask for each one alone.
                logger.warning(
                    "a batch of %d failed permanently (%s); scoring its items one by one",
                    len(batch),
                    error.message,
                )
                for job in batch:
                    await self._score_batch([job])
                return
            if error.type == "client_error":
                logger.exception("score %s: unexpected error", batch[0].job_id)
            for job in batch:
                logger.warning("score %s (%s) failed: %s", job.job_id, job.item.id, error.message)
                await self._append(job, stats, status="failed", retryable=retryable, error=error)
            return
        for job in batch:
            await self._append(
                job, stats, status="ok", result=by_id[job.job_id], model=response.model
            )

    async def _append(
        self,
        job: _ScoreJob,
        stats: CallStats,
        *,
        status: str,
        retryable: bool = False,
        error: ErrorRecord | None = None,
        result: ItemScore | None = None,
        model: ModelInfo | None = None,
    ) -> None:
        fields = ScoreJobFields(
            job_id=job.job_id,
            item_id=job.item.id,
            category=job.item.category,
            language=job.item.language,
            instruction=job.item.instruction,
            hints=job.item.hints,
            edit_job_id=job.edit_job_id,
            edited_image=job.edited_ref,
            edited_sha256=job.edited_sha256,
            source_sha256=job.source_sha256,
            protocol=self.protocol,
            mode=self.mode,
            attempts=stats.attempts,
            retries=stats.retries,
            finished_at=now_iso(),
        )
        if status == "ok" and result is not None and model is not None:
            record = ScoreRecord.answered(fields, result, model)
            if not result.scored:
                self.counts.unscored += 1
        else:
            # Name the judge the job was meant for, so a failure counts for that judge.
            record = ScoreRecord.failed(
                fields,
                error or ErrorRecord(type="client_error", message="no answer and no error"),
                retryable=retryable,
                protocol_hash=self.protocol_info.hash if self.protocol_info else None,
                model=self.info.model if self.info else None,
            )
        self.counts.retries += stats.retries
        await asyncio.to_thread(self.log.append, record)
        self._finish(record.ok)
