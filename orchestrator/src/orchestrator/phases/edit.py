"""Phase 1: every selected item through POST /v1/edits, two per editor worker in flight."""

from __future__ import annotations

import asyncio
import logging

from orchestrator.benchmarks import Item
from orchestrator.clients import EditorClient
from orchestrator.jobs import EditSettings, edit_job_id, model_key, sha256_hex
from orchestrator.phases.base import (
    ModelChanged,
    Phase,
    PhaseContext,
    PhaseCounts,
    TooManyInputs,
    check_item,
    error_record,
    is_finished,
    item_fields,
    now_iso,
    stream_images,
)
from orchestrator.records import EditOutcome, EditParams, EditRecord
from orchestrator.retry import (
    CallStats,
    ReadinessGate,
    call_with_retry,
)
from orchestrator.store import latest_by_job
from orchestrator.thumbs import INPUT_ROLES
from shared_schemas import EditorInfo

logger = logging.getLogger(__name__)


class EditPhase(Phase):
    """Phase 1: every selected item through POST /v1/edits."""

    name = "edit"
    client: EditorClient

    def __init__(
        self,
        ctx: PhaseContext,
        client: EditorClient,
        settings: EditSettings,
        concurrency: int | None = None,
    ) -> None:
        super().__init__(ctx)
        self.client = client
        self.settings = settings
        self.concurrency_override = concurrency
        self.info: EditorInfo | None = None
        self.gate = ReadinessGate("editor", client.is_ready, ctx.policy.probe_interval_s)

    @staticmethod
    def default_concurrency(info: EditorInfo) -> int:
        """As many requests as the editor's /v1/info says a client should keep in flight (its
        admission queue decides); one per worker from an editor too old to say."""
        if info.client_in_flight is not None:
            return info.client_in_flight
        return max(1, len(info.workers))

    async def prepare(self) -> EditorInfo:
        await self._wait_for_service()
        self.info = await self._fetch_info()
        if self._gpu_due and self.info.model is None:
            # Job ids name the model, and one never loaded is not known yet: load it now.
            await self._take_gpu()
            self.info = await self._fetch_info()
        return self.info

    async def _fetch_info(self) -> EditorInfo:
        return await call_with_retry(
            self.client.info, policy=self.ctx.policy, label="editor /v1/info", sleep=self.ctx.sleep
        )

    async def _gpu_taken(self) -> None:
        before = self.info
        self.info = await self._fetch_info()
        if before is not None and model_key(before.model) != model_key(self.info.model):
            raise ModelChanged("editor", before.model, self.info.model)

    async def run(self) -> PhaseCounts:
        info = self.info or await self.prepare()
        self.settings = self.settings.resolved(info.family)
        concurrency = self.concurrency_override or self.default_concurrency(info)
        logger.info(
            "edit phase: %d items, %d in flight (editor: %d workers, max_in_flight %d)",
            len(self.ctx.items),
            concurrency,
            len(info.workers),
            info.max_in_flight,
        )
        self._slots = asyncio.Semaphore(concurrency)
        done = latest_by_job(await asyncio.to_thread(self.ctx.store.edits.read))
        self.counts.planned = len(self.ctx.items)
        self.ctx.progress.start("edit", len(self.ctx.items))
        try:
            async for item, image in stream_images(self.ctx.benchmark, self.ctx.items):
                await self._ensure_thumb("source", item, image)
                more = await asyncio.to_thread(self.ctx.benchmark.input_images, item)
                for role, data in zip(INPUT_ROLES, more, strict=False):
                    await self._ensure_thumb(role, item, data)
                source_sha = sha256_hex(image)
                job_id = edit_job_id(
                    item_id=item.id,
                    source_sha256=source_sha,
                    instruction=item.instruction,
                    settings=self.settings,
                    editor_model=info.model,
                    input_sha256=[sha256_hex(data) for data in more],
                )
                record = done.get(job_id)
                if is_finished(record, self.ctx.retry_failed) and self._image_kept(record):
                    self.counts.skipped += 1
                    self.ctx.progress.advance(skipped=True)
                    continue
                await self._dispatch(self._edit_one(item, image, more, source_sha, job_id))
            await self._drain()
        except BaseException:
            await self._cancel_all()
            raise
        finally:
            await self.gate.close()
            self.ctx.progress.finish()
        return self.counts

    def _image_kept(self, record: EditRecord | None) -> bool:
        """A finished edit whose image was deleted since is done again."""
        if record is None or not record.ok or record.image is None:
            return True
        return self.ctx.store.has_file(record.image)

    def _input_limit(self) -> int | None:
        """Input images one edit may carry: the editor family's (GET /v1/info); None from an
        editor that publishes no family (a served endpoint answers for itself)."""
        family = self.info.family if self.info is not None else None
        return family.max_images if family is not None else None

    async def _edit_one(
        self, item: Item, image: bytes, more: list[bytes], source_sha: str, job_id: str
    ) -> None:
        stats = CallStats()
        base = {
            "job_id": job_id,
            **item_fields(item),
            "source_sha256": source_sha,
            "params": EditParams.model_validate(
                {**self.settings.as_dict(), "seed": self.settings.item_seed(item.id)}
            ),
        }
        try:
            check_item(item.id)
            limit = self._input_limit()
            if limit is not None and 1 + len(more) > limit:
                # The editor would refuse it, and its first input alone is another task.
                raise TooManyInputs(item.id, 1 + len(more), limit, self.info)  # never sent
            request = self.settings.request(item.id, image, item.instruction, more)
            self.counts.requests += 1
            response = await call_with_retry(
                lambda: self.client.edit(request),
                policy=self.ctx.policy,
                gate=self.gate,
                label=f"edit {job_id} ({item.id})",
                stats=stats,
                sleep=self.ctx.sleep,
            )
            expected = self.info.model if self.info is not None else None
            if not _pooled(self.client) and model_key(response.model) != model_key(expected):
                # Redeployed mid-run with another model: its answer is never recorded under
                # this run's job ids (made for the model the phase started with); the run stops.
                raise ModelChanged("editor", expected, response.model)
            relpath = self.ctx.store.edit_image_relpath(item.id, response.output_format)
            await asyncio.to_thread(self.ctx.store.write_file, relpath, response.image)
            await self._ensure_thumb("edited", item, response.image)
        except (asyncio.CancelledError, ModelChanged):
            raise
        except Exception as exc:
            error, retryable = error_record(exc)
            if error.type == "client_error":
                logger.exception("edit %s (%s): unexpected error", job_id, item.id)
            else:
                logger.warning("edit %s (%s) failed: %s", job_id, item.id, error.message)
            outcome: dict[str, object] = {
                "status": "failed",
                "retryable": retryable,
                "error": error,
            }
        else:
            outcome = {
                "status": "ok",
                "image": relpath,
                "image_sha256": sha256_hex(response.image),
                "seed": response.seed,
                "model": response.model,
                "response": EditOutcome.model_validate(
                    response.model_dump(exclude={"image", "model"})
                ),
            }
        record = EditRecord.model_validate(
            {
                **base,
                **outcome,
                "attempts": stats.attempts,
                "retries": stats.retries,
                "finished_at": now_iso(),
            }
        )
        ok = record.ok
        self.counts.retries += stats.retries
        await asyncio.to_thread(self.ctx.store.edits.append, record)
        self._finish(ok)


def _pooled(client: EditorClient) -> bool:
    """Several endpoints: their set checks each answer's model itself (and may allow mixing)."""
    return hasattr(client, "endpoints")
