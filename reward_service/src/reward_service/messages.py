"""Messages between the API process and its judge workers: plain frozen dataclasses.

API -> worker: ScoreBatch, CancelBatch, ReleaseModel, LoadModel, or None (stop).
Worker -> API: the events below. Images travel once per batch as pixels (``images``); a
question names them by index, so questions that show the same image still share it in the worker
(and so share a prompt prefix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL.Image import Image

from reward_service.backends.base import JudgeQuestion, LoadedModel, Mode, QuestionOutput
from service_kit.images import RGBImage

FailureKind = Literal["out_of_memory", "backend_error", "cancelled"]


@dataclass(frozen=True, slots=True)
class WireQuestion:
    key: str
    system: str | None
    content: tuple[str | int, ...]  # text, or the index of an image in the batch
    mode: Mode
    max_new_tokens: int


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    batch_id: int
    images: tuple[RGBImage, ...]
    questions: tuple[WireQuestion, ...]


@dataclass(frozen=True, slots=True)
class CancelBatch:
    """Skip this batch if it has not started: its clients have gone."""

    batch_id: int


@dataclass(frozen=True, slots=True)
class ReleaseModel:
    """Free the model's device memory (hand the GPU to another service)."""


@dataclass(frozen=True, slots=True)
class LoadModel:
    """Load the model again after a ReleaseModel (or a start without loading)."""


@dataclass(frozen=True, slots=True)
class ReplicaReady:
    pid: int
    model: LoadedModel
    load_s: float


@dataclass(frozen=True, slots=True)
class ReplicaLoadFailed:
    pid: int
    message: str


@dataclass(frozen=True, slots=True)
class ReplicaReleased:
    seconds: float


@dataclass(frozen=True, slots=True)
class BatchDone:
    batch_id: int
    outputs: tuple[QuestionOutput, ...]
    prepare_s: float
    score_s: float
    idle_s: float = 0.0  # how long the free model waited before this batch reached the worker
    stall_s: float = 0.0  # ... and then for its preparation to end


@dataclass(frozen=True, slots=True)
class BatchFailed:
    batch_id: int
    kind: FailureKind
    message: str


JudgeEvent = ReplicaReady | ReplicaLoadFailed | ReplicaReleased | BatchDone | BatchFailed


def pack(batch_id: int, questions: Sequence[JudgeQuestion]) -> ScoreBatch:
    """Questions to a message: each distinct image once, as pixels."""
    index: dict[int, int] = {}
    images: list[RGBImage] = []
    wire = []
    for question in questions:
        content: list[str | int] = []
        for part in question.content:
            if isinstance(part, str):
                content.append(part)
                continue
            if id(part) not in index:
                index[id(part)] = len(images)
                images.append(RGBImage.from_pil(part))
            content.append(index[id(part)])
        wire.append(
            WireQuestion(
                question.key,
                question.system,
                tuple(content),
                question.mode,
                question.max_new_tokens,
            )
        )
    return ScoreBatch(batch_id, tuple(images), tuple(wire))


def unpack(batch: ScoreBatch) -> list[JudgeQuestion]:
    """A message back to questions; an image shown by several questions is one object."""
    images: list[Image] = [image.to_pil() for image in batch.images]
    return [
        JudgeQuestion(
            key=q.key,
            system=q.system,
            content=tuple(images[part] if isinstance(part, int) else part for part in q.content),
            mode=q.mode,
            max_new_tokens=q.max_new_tokens,
        )
        for q in batch.questions
    ]
