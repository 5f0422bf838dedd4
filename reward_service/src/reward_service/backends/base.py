"""The seam between the service and a judge model: plain dataclasses and a small Protocol.

Nothing here imports torch, FastAPI or the wire schemas. A backend receives items (the images of
one scored edit, each decoded once, and the questions asked about them: a system prompt and one
user turn of text and images named by index) and returns, per question, either the
log-probabilities of the score tokens (expected mode) or the generated text (generate mode).
Turning those into scores is the service's job (``reward_service.scoring``), the same for every
backend.

Work is split in two so that a later version can overlap CPU preprocessing with the model:
``prepare`` (chat template, image processing, tokenization; must not touch the model) and
``score`` (the forward passes; always called from the one model thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from PIL.Image import Image

import service_kit.models.backend_spec
import service_kit.models.loaded_model
from service_kit.models.refusals import ConfigurationRefused

Mode = Literal["expected", "generate"]

# Qwen tokenizes numbers digit by digit, so 0..9 are one token each and 10..99 two tokens.
SCORE_DIGITS = 10


@dataclass(frozen=True, slots=True)
class JudgeQuestion:
    """One question: a system prompt and a user turn, and how the answer is to be read.

    Images are named by their index in the item's ``images``: two questions showing the same
    image name the same index (and so can share its encoding and their prompt prefix).
    """

    key: str  # "<request id>/<item index>/<question name>", for logs
    system: str | None
    content: tuple[str | int, ...]  # the user turn in order: text, or an image's index
    mode: Mode
    max_new_tokens: int = 0  # generate mode only
    scale: tuple[int, int] = (0, 10)  # the protocol's integer scale, min and max (<= 99)

    @property
    def image_indices(self) -> tuple[int, ...]:
        return tuple(part for part in self.content if isinstance(part, int))

    @property
    def leads(self) -> tuple[int, ...]:
        """expected mode: the digits whose next token must be read (the first digits of the
        scale's two-digit numbers: (1,) on 0..10, (1, 2) on 0..25, none on 1..5)."""
        low, high = self.scale
        return tuple(sorted({n // 10 for n in range(max(low, 10), high + 1)}))


ImageT = TypeVar("ImageT")


@dataclass(frozen=True, slots=True)
class JudgeItem(Generic[ImageT]):
    """One scored edit: its images, each once, and the questions asked about it, in order.

    The API process builds it once, with pixels (``RGBImage``) as images; the worker hands it to
    the backend with the same questions and decoded images (``PIL.Image.Image``).
    """

    images: tuple[ImageT, ...]
    questions: tuple[JudgeQuestion, ...]

    def __post_init__(self) -> None:
        shown = {i for q in self.questions for i in q.image_indices}
        if shown and (min(shown) < 0 or max(shown) >= len(self.images)):
            raise ValueError(f"a question names an image this item does not have: {sorted(shown)}")

    def images_of(self, question: JudgeQuestion) -> list[ImageT]:
        return [self.images[i] for i in question.image_indices]

    def cost(self) -> int:
        """Images this item puts through the model: questions showing the same images share."""
        shown = {q.image_indices for q in self.questions}
        return max(1, sum(len(images) for images in shown))


def questions_of(items: Sequence[JudgeItem[Any]]) -> list[JudgeQuestion]:
    """Every item's questions, item by item: the order of a backend's outputs."""
    return [q for item in items for q in item.questions]


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens an answer cost, as a judge endpoint reports them (what a judged run cost)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ScoreTokenLogprobs:
    """expected mode: natural-log probabilities of the digit tokens at the answer's start.

    ``first[d]`` is log P(first answer token is digit d). ``after_one[d]`` is
    log P(next token is digit d | answer so far is "1"), which tells 1 from 10 (and from 11..19).
    ``after_other`` holds the same for the question's other leads (JudgeQuestion.leads): on a
    0..25 scale, the digits after "2".
    """

    first: tuple[float, ...]
    after_one: tuple[float, ...]
    usage: TokenUsage | None = None
    after_other: tuple[tuple[int, tuple[float, ...]], ...] = ()

    @property
    def after(self) -> dict[int, tuple[float, ...]]:
        """The digit distribution after each lead that was read, "1" included."""
        return {1: self.after_one, **dict(self.after_other)}


@dataclass(frozen=True, slots=True)
class GeneratedText:
    """generate mode: the judge's answer (greedy), special tokens removed."""

    text: str
    new_tokens: int
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class Unanswered:
    """The judge declined this one question (e.g. an endpoint refused its content): unscored,
    with the reason; the other questions of the batch are unaffected."""

    reason: str
    usage: TokenUsage | None = None


QuestionOutput = ScoreTokenLogprobs | GeneratedText | Unanswered


@dataclass(frozen=True, slots=True)
class QuestionError:
    """A remote endpoint failed this one question after its retries, while it answered other
    questions of the batch: only this question's item fails (``message`` is safe to show;
    ``retryable``: the endpoint was slow or overloaded for it rather than refusing it)."""

    message: str
    retryable: bool


BackendOutput = QuestionOutput | QuestionError


@dataclass(frozen=True, slots=True)
class LoadedModel(service_kit.models.loaded_model.LoadedModel):
    """What a backend reports once loaded (service_kit.models.loaded_model), and how it can
    answer."""

    # How answers can be read: an endpoint without log-probabilities supports generate only.
    modes: tuple[Mode, ...] = ("expected", "generate")
    # Answers do not depend on what else shares a batch (the spec asked and the backend can).
    deterministic: bool = False


@dataclass(frozen=True, slots=True)
class BackendSpec(service_kit.models.backend_spec.BackendSpec):
    """Everything needed to build a backend (service_kit.models.backend_spec): ``transformers`` (the
    built-in backend), ``openai`` (a model served behind an OpenAI-compatible chat completions
    endpoint) or ``module:Class`` (a JudgeBackend of your own)."""

    # Deterministic mode: a question's answer is bit-identical whatever batch, order or partners
    # it is scored with (same hardware and software). A backend that cannot promise it says so
    # in LoadedModel.deterministic.
    deterministic: bool = False


class DeviceOutOfMemory(Exception):
    """The device ran out of memory for this batch; the backend has freed what it could."""


class InvalidOption(ConfigurationRefused):
    """A judge option set to a value it does not have: refused at load, and final (the replica is
    not restarted; service_kit.models.refusals)."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def option_flag(options: dict[str, Any], name: str, default: bool) -> bool:
    """An on/off option (``REWARD_BACKEND_OPTIONS``): a JSON boolean, 0/1, or one of the words
    true/false, yes/no, on/off; anything else is refused (InvalidOption), never read as off."""
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidOption(f"{name} must be true or false, not {value!r}")


class EndpointError(Exception):
    """A remote judge failed the whole batch. ``message`` is safe to show a client (it never
    holds credentials or the endpoint's raw body); ``retryable``: the endpoint is overloaded or
    unreachable (503 with Retry-After) rather than refusing us (502)."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class JudgeBackend(Protocol):
    def load(self, device: str) -> LoadedModel:
        """Load weights onto ``device``. Called once, from the model thread."""
        ...

    def prepare(self, items: Sequence[JudgeItem[Image]]) -> object:
        """CPU preprocessing of a batch (templates, images, tokens). Never touches the model."""
        ...

    def score(self, prepared: object) -> Sequence[BackendOutput]:
        """Run the model on a prepared batch: one output per question, item by item, in order
        (a QuestionError for a question a remote endpoint failed on its own).

        Called from the model thread only. Batched outputs must equal unbatched ones (up to
        floating-point noise): padding must not leak into any question's answer.
        """
        ...

    def release(self) -> None:
        """Free the device memory the model holds."""
        ...
