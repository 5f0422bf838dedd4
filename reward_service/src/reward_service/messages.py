"""Messages between the API process and its judge workers: plain frozen dataclasses.

API -> worker: ScoreBatch, CancelBatch, service_kit.replicas.replica_set's ReleaseModel and
LoadModel, or None (stop). Worker -> API: the replica lifecycle events
(service_kit.replicas.replica_set) and the batch events below. A batch is the judge items the scorer
built, unchanged: each item's images travel once, as pixels, and its questions name them by index,
so questions that show the same image still share it in the worker (and so share a prompt prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL.Image import Image

from reward_service.backends.base import JudgeItem, QuestionOutput
from service_kit.images.decoding import RGBImage

FailureKind = Literal[
    "out_of_memory", "backend_error", "cancelled", "endpoint_unavailable", "endpoint_refused"
]


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """Items to judge, each with its key (the admission queue's uid): the answers come back by
    key."""

    batch_id: int
    items: tuple[JudgeItem[RGBImage], ...]
    keys: tuple[int, ...]

    def decoded(self) -> list[JudgeItem[Image]]:
        """The items with their pixels as images (in the worker), questions untouched."""
        return [decode_item(item) for item in self.items]


def decode_item(item: JudgeItem[RGBImage]) -> JudgeItem[Image]:
    """An item as a backend takes it: each image's pixels as one PIL image."""
    return JudgeItem(tuple(image.to_pil() for image in item.images), item.questions)


@dataclass(frozen=True, slots=True)
class CancelBatch:
    """Skip this batch if it has not started: its clients have gone."""

    batch_id: int


@dataclass(frozen=True, slots=True)
class QuestionFailed:
    """The answer to a question of an item that failed on its own (its batch-mates were
    answered): what went wrong, and whether trying again can help (out of memory: yes; an error
    the item causes: no)."""

    kind: Literal["out_of_memory", "backend_error", "endpoint_refused", "endpoint_unavailable"]
    message: str
    retryable: bool


Answer = QuestionOutput | QuestionFailed


@dataclass(frozen=True, slots=True)
class BatchDone:
    batch_id: int
    answers: dict[int, tuple[Answer, ...]]  # item key -> its questions' answers, in order
    prepare_s: float
    score_s: float
    idle_s: float = 0.0  # how long the free model waited before this batch reached the worker
    stall_s: float = 0.0  # ... and then for its preparation to end


@dataclass(frozen=True, slots=True)
class BatchFailed:
    batch_id: int
    kind: FailureKind
    message: str


JudgeEvent = BatchDone | BatchFailed
