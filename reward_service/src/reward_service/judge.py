"""The judge's dispatch, API-process side: batches to the least-loaded replica.

The replicas (one worker process per device, each holding one copy of the model), their
lifecycle, GPU hand-over, admission and readiness are service_kit.replicas.replica_set.ReplicaSet's.
Here: the admission queue (service_kit.replicas.admission) hands a batch to ``pack`` (the
scorer's judge items, pixels and all, as one message) and then to ``score``, which sends it to the
ready replica with the fewest batches and awaits its answer. The queue owns back-pressure: it
keeps at most the pipeline depth (``REWARD_PIPELINE_DEPTH``) times the replicas batches out, so
each replica holds one batch on the model while its worker prepares the next (template, image
processing, tokens: "prepare" means only that). A replica that dies fails only the batches it
held (503, retryable) and is restarted with backoff. An item whose question failed on its own
(its batch-mates were scored, reward_service.worker) fails only its request, saying whether a
retry can help.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from reward_service.backends.base import BackendSpec, JudgeItem, LoadedModel, QuestionOutput
from reward_service.messages import (
    Answer,
    BatchDone,
    BatchFailed,
    CancelBatch,
    JudgeEvent,
    QuestionFailed,
    ScoreBatch,
)
from reward_service.metrics import RewardMetrics
from reward_service.worker import judge_worker_main
from service_kit.errors import NotReady, ServiceError, WorkerDied, worker_failure
from service_kit.images.decoding import RGBImage
from service_kit.replicas.admission import AdmissionQueue, BatchPolicy
from service_kit.replicas.dispatch import ReplicaDispatch
from service_kit.replicas.replica_set import Replica, ReplicaConfig, ReplicaSet

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Replica(Replica):
    outstanding: dict[int, asyncio.Future[BatchDone]] = field(default_factory=dict)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)


class Judge(ReplicaDispatch[_Replica, LoadedModel]):
    def __init__(
        self,
        spec: BackendSpec,
        devices: Sequence[str],
        *,
        metrics: RewardMetrics,
        config: ReplicaConfig,
        policy: BatchPolicy[JudgeItem[RGBImage]],
        capacity: int,
        timeout_s: float,
        pipeline_depth: int,
    ) -> None:
        """``policy``: how items are batched; ``capacity`` items may wait, each at most
        ``timeout_s``; ``pipeline_depth`` batches per replica may be out (one on the model, the
        next being prepared in its worker)."""
        if not devices:
            raise ValueError("the judge needs at least one device")
        self.spec = spec
        self.replicas = [_Replica(i, d) for i, d in enumerate(devices)]
        self._metrics = metrics  # per-batch timings from the worker, too
        self._batch_ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()
        self.replica_set: ReplicaSet[_Replica] = ReplicaSet(
            self.replicas,
            target=judge_worker_main,
            spec=spec,
            config=config,
            metrics=metrics.replicas,
            # A release waits for admitted work.
            idle=lambda: self.queue.in_flight() == 0 and self._outstanding() == 0,
            on_event=self._on_event,
            on_exit=self._on_exit,
        )
        self.queue: AdmissionQueue[JudgeItem[RGBImage], tuple[QuestionOutput, ...]] = (
            AdmissionQueue(
                self.score,
                pack=self.pack,
                policy=policy,
                capacity=capacity,
                timeout_s=timeout_s,
                metrics=metrics.admission,
                on_batch=metrics.batch_done,
                batches_out=len(devices) * pipeline_depth,  # the one back-pressure owner
            )
        )

    def _outstanding(self) -> int:
        return sum(len(r.outstanding) for r in self.replicas)

    # ----------------------------------------------------------------- lifecycle

    def stopped(self) -> None:
        for replica in self.replicas:
            self._fail_outstanding(replica, NotReady("the service is shutting down"))

    # ----------------------------------------------------------------- work

    async def pack(self, items: dict[int, JudgeItem[RGBImage]]) -> ScoreBatch:
        """The items (by key) as one message; the worker prepares the batch."""
        self._ensure_can_serve()
        return ScoreBatch(next(self._batch_ids), tuple(items.values()), tuple(items))

    async def score(
        self, batch: ScoreBatch
    ) -> dict[int, tuple[QuestionOutput, ...] | ServiceError]:
        """Run a batch on the replica with the least work: each item's outputs by its key, or
        the error of an item whose question failed on its own (an item the worker did not
        answer fails alone: the admission queue sees no answer for its key)."""
        done = await self._score(batch)
        return {key: _item_result(answers) for key, answers in done.answers.items()}

    async def _score(self, batch: ScoreBatch) -> BatchDone:
        replica = await self._least_loaded()
        future: asyncio.Future[BatchDone] = asyncio.get_running_loop().create_future()
        replica.outstanding[batch.batch_id] = future
        try:
            async with replica.sending:  # one writer per pipe at a time
                sent = await asyncio.to_thread(self.replica_set.send, replica, batch)
            if not sent:
                raise WorkerDied(f"judge replica {replica.index} is gone", retry_after_s=5)
            try:
                done = await asyncio.shield(future)
            except asyncio.CancelledError:
                # Nobody wants the answer: have the worker skip the batch if it has not begun.
                cancel = asyncio.create_task(self._send(replica, CancelBatch(batch.batch_id)))
                self._background.add(cancel)
                cancel.add_done_callback(self._background.discard)
                raise
        finally:
            replica.outstanding.pop(batch.batch_id, None)
        return done

    async def _send(self, replica: _Replica, message: object) -> None:
        async with replica.sending:
            await asyncio.to_thread(self.replica_set.send, replica, message)

    async def _least_loaded(self) -> _Replica:
        """The ready replica with the fewest batches. The queue bounds how many batches are
        out (the pipeline depth per replica); while no replica is ready (one restarting, or loading
        again), the batch waits for one, unless nothing will serve it."""
        while True:
            self._ensure_can_serve()
            serving = self.replica_set.serving()
            if serving:
                return min(serving, key=lambda r: len(r.outstanding))
            await self.replica_set.wait_change(timeout_s=1.0)

    def _ensure_can_serve(self) -> None:
        """Raise NotReady when no replica serves and none will: the model was released (and no
        replica still holds it) or every replica was given up on."""
        state = self.replica_set.model_state()
        if self.replica_set.given_up() or (state == "released" and not self.replica_set.serving()):
            raise NotReady(self.replica_set.readiness().detail, retry_after_s=30, model_state=state)

    # ----------------------------------------------------------------- events

    def _on_event(self, replica: _Replica, event: JudgeEvent) -> None:
        if not isinstance(event, BatchDone | BatchFailed):
            return
        future = replica.outstanding.get(event.batch_id)
        if future is None or future.done():
            return
        if isinstance(event, BatchDone):
            future.set_result(event)
            self._metrics.worker_batch(replica.index, replica.device, event)
        else:
            future.set_exception(worker_failure(event.kind, event.message))

    def _on_exit(self, replica: _Replica) -> None:
        self._fail_outstanding(
            replica, WorkerDied(f"judge replica {replica.index} died", retry_after_s=5)
        )

    @staticmethod
    def _fail_outstanding(replica: _Replica, error: Exception) -> None:
        for future in replica.outstanding.values():
            if not future.done():
                future.set_exception(error)

    # ----------------------------------------------------------------- views

    @property
    def devices(self) -> list[str]:
        return self.replica_set.devices

    @property
    def load_s(self) -> float | None:
        return self.replica_set.load_s

    def ensure_ready(self) -> LoadedModel:
        """The model, if a new request may be admitted; else NotReady (503) saying why."""
        self.replica_set.check_admission()
        model = self.model
        if model is None:  # admitted only once a replica has loaded, so never here
            raise NotReady(self.replica_set.readiness().detail, retry_after_s=10)
        return model


def _item_result(answers: tuple[Answer, ...]) -> tuple[QuestionOutput, ...] | ServiceError:
    """An item's outputs, or the error of its first question that failed on its own."""
    outputs = tuple(a for a in answers if not isinstance(a, QuestionFailed))
    if len(outputs) == len(answers):
        return outputs
    failed = next(a for a in answers if isinstance(a, QuestionFailed))
    error = worker_failure(failed.kind, failed.message)
    error.retryable = failed.retryable
    return error
