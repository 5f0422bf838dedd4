"""Requests and responses of the reward service (a Qwen3-VL judge)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from shared_schemas.common import ModelInfo, ModelState, RequestModel, WireModel
from shared_schemas.images import ImageData

ScoreMode = Literal["expected", "generate"]
SCORE_MODES: tuple[ScoreMode, ...] = ("expected", "generate")
# The images a protocol question may show, by role: the item's first input (``source``), its
# edit, its further inputs in order (``input_2`` is ScoreItem.input_images[0]) and a reference
# (ground-truth) image. A question's further inputs are shown where the item has them.
ImageRole = Literal[
    "source", "edited", "input_2", "input_3", "input_4", "input_5", "input_6", "reference"
]
IMAGE_ROLES: tuple[ImageRole, ...] = (
    "source",
    "edited",
    "input_2",
    "input_3",
    "input_4",
    "input_5",
    "input_6",
    "reference",
)
# Input images one item may carry (``source`` included): roles source, input_2..input_6.
MAX_ITEM_INPUTS = 6

MAX_ITEMS_PER_REQUEST = 64
# The widest integer scale a protocol may declare; expected mode reads scales up to two digits
# (a first digit and the digit after it), wider ones are generate-only.
SCALE_LIMIT = 1000
EXPECTED_SCALE_LIMIT = 99


class ScoreScale(WireModel):
    """A protocol's integer scale: every score it produces lies in [min, max]."""

    min: int = Field(ge=0, le=SCALE_LIMIT)
    max: int = Field(ge=1, le=SCALE_LIMIT)

    @model_validator(mode="after")
    def _ordered(self) -> ScoreScale:
        if self.min >= self.max:
            raise ValueError("scale: min must be below max")
        return self

    @property
    def values(self) -> range:
        return range(self.min, self.max + 1)

    def contains(self, value: float) -> bool:
        """A finite number within the scale (NaN and infinities never are)."""
        return self.min <= value <= self.max


DEFAULT_SCALE = ScoreScale(min=0, max=10)


class ScoreItem(RequestModel):
    id: str | None = Field(default=None, max_length=512, description="Echoed back unchanged.")
    source_image: ImageData
    edited_image: ImageData
    instruction: str = Field(min_length=1, max_length=4000)
    category: str | None = Field(
        default=None, max_length=200, description="Selects per-category prompts where defined."
    )
    hints: str | None = Field(
        default=None, max_length=4000, description="Per-item guidance for the judge, if any."
    )
    input_images: list[ImageData] = Field(
        default_factory=list,
        max_length=MAX_ITEM_INPUTS - 1,
        description="The item's further input images after source_image, in order (roles "
        "input_2, input_3, ...): shown where the protocol's questions name them.",
    )
    reference_image: ImageData | None = Field(
        default=None,
        description="A reference (ground-truth) image (role reference), for protocols whose "
        "questions show one.",
    )

    variant: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Which variant of the protocol's questions the item is asked, where a "
        "question has variants (its benchmark's loader names it, e.g. KRIS-Bench's temporal "
        "frame_2: the frames in order, the generated one second); else the question as written.",
    )


class ScoreRequest(RequestModel):
    """POST /v1/scores."""

    items: list[ScoreItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)
    protocol: str = Field(default="viescore", min_length=1, max_length=200)
    mode: ScoreMode = Field(
        default="expected",
        description="expected: probability-weighted mean over the scale's numbers, from one "
        "forward pass (never fails to parse; only protocols whose ProtocolInfo.modes lists it). "
        "generate: the judge writes its answer, which the protocol's parse rule reads; "
        "unparseable answers are returned unscored with the raw text.",
    )
    max_new_tokens: int = Field(default=512, ge=8, le=4096, description="generate mode only.")


class TokenUsage(WireModel):
    """Tokens a remote judge endpoint reports for its answers (what judging cost)."""

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> TokenUsage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    @classmethod
    def total(cls, usages: list[TokenUsage | None]) -> TokenUsage | None:
        """The sum of those known; None when none is."""
        known = [u for u in usages if u is not None]
        if not known:
            return None
        return cls.of(sum(u.prompt_tokens for u in known), sum(u.completion_tokens for u in known))


class QuestionScore(WireModel):
    """One named score of an item. A question that answers several scores in one answer (a
    JSON list, say) gives one entry per score, each naming the question; the raw text, error and
    token usage are on each of them (usage on the first only, so sums count it once)."""

    name: str = Field(description="The score's name (a question's own name where it answers one).")
    question: str | None = Field(
        default=None, description="The question that asked for it (None: the same as name)."
    )
    group: str | None = Field(
        default=None, description="Deprecated (one release): the metric that reads it, if any."
    )
    score: float | None = Field(
        description="None when the answer could not be scored; else within the protocol's scale."
    )
    distribution: list[float] | None = Field(
        default=None,
        description="expected mode: P(score = scale.min..scale.max), renormalised over the "
        "scale's numbers.",
    )
    score_mass: float | None = Field(
        default=None,
        description="expected mode: probability the judge gave to answering with a score at all, "
        "before renormalisation (low values mean it wanted to say something else).",
    )
    raw_text: str | None = Field(default=None, description="generate mode: the judge's answer.")
    error: str | None = Field(default=None, description="Why the question is unscored.")
    usage: TokenUsage | None = Field(
        default=None, description="Tokens the judge endpoint reported for this answer, if any."
    )


class ScoreTimings(WireModel):
    queue_wait_s: float = Field(ge=0)
    inference_s: float = Field(ge=0, description="Wall time of the batches this item was in.")
    total_s: float = Field(ge=0)
    batch_items: int | None = Field(
        default=None,
        ge=1,
        description="Items in the batch this item was in: inference_s / batch_items is the "
        "item's share of the judge's device time (None: not reported).",
    )


class ItemScore(WireModel):
    id: str | None
    protocol: str
    protocol_hash: str
    deterministic: bool = Field(
        default=False,
        description="Scored in deterministic mode: these numbers do not depend on what else was "
        "batched with the item (bit-identical on the same GPU model and software).",
    )
    mode: ScoreMode
    questions: list[QuestionScore]
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="The protocol's metrics (ProtocolInfo.metrics), by name, in its order; None "
        "where a score they read is unscored.",
    )
    sc: float | None = Field(
        default=None, description="Deprecated (one release): metrics['sc'] where defined."
    )
    pq: float | None = Field(
        default=None, description="Deprecated (one release): metrics['pq'] where defined."
    )
    overall: float | None = Field(
        default=None, description="Deprecated (one release): the protocol's headline metric."
    )
    scored: bool = Field(description="False when any question could not be scored.")
    timings: ScoreTimings


class ScoreResponse(WireModel):
    results: list[ItemScore]
    model: ModelInfo
    usage: TokenUsage | None = Field(
        default=None,
        description="Tokens this request cost at a remote judge endpoint (the sum over its "
        "questions); None for a local judge.",
    )


class ProtocolQuestion(WireModel):
    name: str
    group: str | None = Field(default=None, description="Deprecated (one release).")
    images: list[ImageRole]
    answers: list[str] = Field(
        default_factory=list, description="The named scores its one answer carries, in order."
    )
    scale: ScoreScale | None = Field(
        default=None, description="Its own scale where it differs from the protocol's."
    )


class MetricInfo(WireModel):
    """One metric a protocol reports for every item."""

    name: str
    label: str = Field(description="How tables and reports title it.")
    rule: str = Field(description="How it is computed, e.g. 'min(editing_success, over_editing)'.")


class QuestionSetInfo(WireModel):
    """The questions asked of items of some categories, and the metrics such an item has: a
    metric not listed is absent for those items by design (not unscored)."""

    name: str
    categories: list[str] | None = Field(
        description="None: the default set, for every category no other set names (and items "
        "without a category)."
    )
    questions: list[str]
    metrics: list[str] = Field(description="The metrics an item judged with this set has.")


class ProtocolInfo(WireModel):
    name: str
    hash: str = Field(description="sha256 of the protocol's full definition (prompts included).")
    description: str
    questions: list[ProtocolQuestion]
    scale: ScoreScale = Field(
        default=DEFAULT_SCALE, description="Every score and metric lies within it."
    )
    metrics: list[MetricInfo] = Field(
        default_factory=list, description="What ItemScore.metrics holds, in this order."
    )
    headline: str | None = Field(default=None, description="The metric a leaderboard ranks by.")
    modes: list[ScoreMode] = Field(
        default_factory=lambda: list(SCORE_MODES),
        description="How its answers can be read: generate only where an answer carries several "
        "scores (expected mode cannot read a distribution per score there) or the protocol "
        "gives no expected-mode answer instruction.",
    )
    categories: list[str] = Field(
        default_factory=list, description="Categories with their own prompts, if any."
    )
    source: Literal["builtin", "file"]
    images_per_item: int = Field(
        default=1,
        description="Images one item puts through the model (questions on the same images "
        "share them); batches are sized in images.",
    )
    question_sets: list[QuestionSetInfo] = Field(
        default_factory=list,
        description="Which questions (and so which metrics) apply to which categories; empty: "
        "every question and metric applies to every item.",
    )
    superseded_by: str | None = Field(
        default=None, description="Kept for runs that name it; new runs should use this one."
    )

    def question_set(self, category: str | None) -> QuestionSetInfo | None:
        """The set an item of ``category`` is judged with (None: the protocol has no sets)."""
        default = None
        for entry in self.question_sets:
            if entry.categories is None:
                default = entry
            elif category is not None and category in entry.categories:
                return entry
        return default

    def metrics_for(self, category: str | None) -> list[str]:
        """The metrics an item of ``category`` has; the others are absent for it by design."""
        entry = self.question_set(category)
        if entry is None:
            return [m.name for m in self.metrics]
        return [m.name for m in self.metrics if m.name in entry.metrics]


class ProtocolsResponse(WireModel):
    protocols: list[ProtocolInfo]


class ProtocolDefinition(WireModel):
    """GET /v1/protocols/{name}: a protocol's full definition, prompts included."""

    info: ProtocolInfo
    definition: dict[str, Any] = Field(
        description="The validated definition with defaults filled in. info.hash is the sha256 of "
        "its canonical JSON: sorted keys, separators (',', ':'), UTF-8, non-ASCII kept."
    )


class RewardInfo(WireModel):
    """GET /v1/info on the reward service."""

    service: Literal["reward"] = "reward"
    version: str
    model: ModelInfo | None
    devices: list[str] = Field(description="One model replica per device, fed by one batcher.")
    max_batch_images: int = Field(
        description="Images per forward pass; an item costs its protocol's images_per_item."
    )
    max_wait_s: float
    judge_image_pixels: int | None = Field(
        default=None,
        description="The most pixels an image is shown to the judge at; larger ones are scaled "
        "down (aspect kept) before the model sees them.",
    )
    queue_capacity: int = Field(description="Items that may wait; more are refused with 429.")
    queue_depth: int = Field(description="Items waiting now.")
    protocols: list[str]
    modes: list[ScoreMode] = Field(
        default_factory=lambda: list(SCORE_MODES),
        description="How the loaded judge can read a score: a remote endpoint that returns no "
        "log-probabilities supports generate only (found out by a probe at start-up).",
    )
    model_state: ModelState = Field(default="loaded", description="Where the model is.")
    batches_out: int | None = Field(
        default=None,
        ge=1,
        description="Batches the judge keeps on its replicas at once (pipeline depth x "
        "replicas). To keep them full a client keeps one more batch of items in flight: "
        "(batches_out + 1) x max_batch_images images. None from services older than this field.",
    )
    client_in_flight: dict[str, int] = Field(
        default_factory=dict,
        description="Items one client should keep in flight, by protocol, to keep every batch "
        "the judge keeps out full without being refused (the service's admission queue decides "
        "it; a client sharing the judge with others may be held to a smaller share: 429 with "
        "Retry-After). Empty from services older than this field.",
    )
