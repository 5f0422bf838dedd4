"""From a score request to judge questions, and from the judge's outputs to item scores.

Each item becomes one JudgeItem, built here once and carried unchanged to the judge's worker:
its images (source, edit, further inputs, reference), decoded once (to pixels), and the
questions its category is asked (the protocol's question set for it, in the protocol's order),
naming the images by index. The answers are read back in the same order; metrics the item's
questions cannot make are absent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reward_service.backends.base import (
    GeneratedText,
    JudgeItem,
    JudgeQuestion,
    QuestionOutput,
    ScoreTokenLogprobs,
    TokenUsage,
    Unanswered,
)
from reward_service.metrics import RewardMetrics
from reward_service.parsing import parse_scores
from reward_service.protocols import Protocol, render
from reward_service.protocols.definition import (
    ImageSlot,
    MissingImage,
    QuestionSpec,
    RenderedQuestion,
)
from reward_service.protocols.metrics import compute_metrics
from reward_service.scoring import expected_score
from service_kit.errors import InvalidInput
from service_kit.images.decoding import RGBImage, decode_image, fit_within, read_header
from service_kit.replicas.admission import Completed
from shared_schemas import (
    DEFAULT_SCALE,
    ItemScore,
    QuestionScore,
    ScoreItem,
    ScoreRequest,
    ScoreScale,
    ScoreTimings,
)
from shared_schemas import TokenUsage as WireUsage
from shared_schemas.scores import ImageRole


@dataclass(frozen=True, slots=True)
class ItemImages:
    source: RGBImage
    edited: RGBImage
    inputs: tuple[RGBImage, ...] = ()  # further inputs after the source (input_2, ...)
    reference: RGBImage | None = None

    def ordered(self) -> tuple[RGBImage, ...]:
        """The item's images as the judge item holds them (image_index's order)."""
        extra = () if self.reference is None else (self.reference,)
        return (self.source, self.edited, *self.inputs, *extra)


def image_index(role: ImageRole, inputs: int) -> int:
    """Where an image role sits in ItemImages.ordered() of an item with ``inputs`` further
    inputs (roles the item lacks are left out by the renderer)."""
    if role == "source":
        return 0
    if role == "edited":
        return 1
    if role == "reference":
        return 2 + inputs
    return int(role.removeprefix("input_"))  # input_2 -> 2, right after the edit


def _fields(item: ScoreItem, i: int) -> list[tuple[bytes, str]]:
    """An item's images with the request field each came in, in ItemImages.ordered()'s order."""
    fields = [(item.source_image, f"items[{i}].source_image")]
    fields.append((item.edited_image, f"items[{i}].edited_image"))
    fields += [(d, f"items[{i}].input_images[{k}]") for k, d in enumerate(item.input_images)]
    if item.reference_image is not None:
        fields.append((item.reference_image, f"items[{i}].reference_image"))
    return fields


def _images(items: Sequence[ScoreItem]) -> list[tuple[bytes, str]]:
    return [field for i, item in enumerate(items) for field in _fields(item, i)]


def inspect_items(items: Sequence[ScoreItem], max_pixels: int) -> float:
    """What decoding every image will cost (structure and headers only), or raise InvalidImage
    / ImageTooLarge / ImageTooComplex naming the field."""
    return sum(
        read_header(data, max_pixels=max_pixels, param=param).decode_cost
        for data, param in _images(items)
    )


def decode_items(
    items: Sequence[ScoreItem], max_pixels: int, judge_pixels: int | None = None
) -> list[ItemImages]:
    """Decode every image to pixels, at most ``judge_pixels`` each when given (scaled down,
    aspect kept), or raise InvalidImage / ImageTooLarge naming the field."""
    decoded = []
    for i, item in enumerate(items):
        source, edited, *rest = (
            _pixels(data, max_pixels, param, judge_pixels) for data, param in _fields(item, i)
        )
        inputs = tuple(rest[: len(item.input_images)])
        reference = rest[len(item.input_images)] if item.reference_image is not None else None
        decoded.append(ItemImages(source, edited, inputs, reference))
    return decoded


def check_images(protocol: Protocol, request: ScoreRequest) -> None:
    """InvalidInput (400 naming the item's field) when a question shows an image an item does
    not carry (a reference image), before anything is decoded."""
    for i, item in enumerate(request.items):
        try:
            _render(protocol, request, item)
        except MissingImage as exc:
            raise InvalidInput(
                f"items[{i}]: protocol {protocol.name!r}: {exc}",
                param=f"items[{i}].{exc.role}_image",
            ) from None


def _render(protocol: Protocol, request: ScoreRequest, item: ScoreItem) -> list[RenderedQuestion]:
    return render(
        protocol.spec,
        instruction=item.instruction,
        category=item.category,
        hints=item.hints,
        mode=request.mode,
        inputs=1 + len(item.input_images),
        has_reference=item.reference_image is not None,
        variant=item.variant,
    )


def _pixels(data: bytes, max_pixels: int, param: str, judge_pixels: int | None) -> RGBImage:
    image = decode_image(data, max_pixels=max_pixels, param=param, scale_to_pixels=judge_pixels)
    return RGBImage.from_pil(fit_within(image, judge_pixels) if judge_pixels else image)


ItemWork = JudgeItem[RGBImage]


def build_items(
    protocol: Protocol, request: ScoreRequest, images: Sequence[ItemImages], request_id: str
) -> list[ItemWork]:
    """Every item's judge item: its questions in the protocol's order; judged in one batch."""
    items = []
    for index, (item, item_images) in enumerate(zip(request.items, images, strict=True)):
        questions = []
        scales = {q.name: protocol.spec.question_scale(q) for q in protocol.spec.questions}
        for question in _render(protocol, request, item):
            content = tuple(
                image_index(part.role, len(item.input_images))
                if isinstance(part, ImageSlot)
                else part
                for part in question.parts
            )
            questions.append(
                JudgeQuestion(
                    key=f"{request_id}/{index}/{question.name}",
                    system=question.system or None,
                    content=content,
                    mode=request.mode,
                    max_new_tokens=request.max_new_tokens,
                    scale=(scales[question.name].min, scales[question.name].max),
                )
            )
        items.append(JudgeItem(item_images.ordered(), tuple(questions)))
    return items


def item_cost(item: ItemWork) -> int:
    """Images one item puts through the model (the batcher's cost of a unit)."""
    return item.cost()


def read_output(
    name: str, output: QuestionOutput, scale: ScoreScale = DEFAULT_SCALE
) -> QuestionScore:
    """A one-score question's score from the judge's raw output; never a guess."""
    [score] = read_answers(QuestionSpec(name=name, images=["edited"], prompt="-"), output, scale)
    return score


def read_answers(
    question: QuestionSpec, output: QuestionOutput, scale: ScoreScale
) -> list[QuestionScore]:
    """The question's named scores from the judge's raw output, one entry each; never a guess.
    The output's token usage goes on the first entry only (so sums count it once)."""
    scores = _read_output(question, output, scale)
    if output.usage is None:
        return scores
    first = scores[0].model_copy(update={"usage": _wire_usage(output.usage)})
    return [first, *scores[1:]]


def _wire_usage(usage: TokenUsage) -> WireUsage:
    return WireUsage.of(usage.prompt_tokens, usage.completion_tokens)


def _read_output(
    question: QuestionSpec, output: QuestionOutput, scale: ScoreScale
) -> list[QuestionScore]:
    names = question.scores
    asked = None if names == [question.name] else question.name
    if isinstance(output, Unanswered):
        return [
            QuestionScore(name=n, question=asked, score=None, error=output.reason) for n in names
        ]
    if isinstance(output, ScoreTokenLogprobs):
        if len(names) != 1:  # refused at the route: such protocols are generate-only
            raise ValueError(f"question {question.name!r} answers several scores")
        expected = expected_score(output.first, output.after_one, scale, output.after)
        if expected is None:
            broken = any(math.isnan(v) for v in (*output.first, *output.after_one))
            error = (
                "the model's probabilities are NaN"
                if broken
                else "the judge gave no probability to any score"
            )
            return [QuestionScore(name=names[0], question=asked, score=None, error=error)]
        return [
            QuestionScore(
                name=names[0],
                question=asked,
                score=expected.score,
                distribution=list(expected.distribution),
                score_mass=expected.score_mass,
            )
        ]
    if isinstance(output, GeneratedText):
        rule = question.parse
        parsed = parse_scores(
            output.text, names, format=rule.format, key=rule.key, pattern=rule.pattern, scale=scale
        )
        return [
            QuestionScore(
                name=n,
                question=asked,
                score=parsed.scores.get(n),
                raw_text=output.text,
                error=parsed.error,
            )
            for n in names
        ]
    raise TypeError(f"unknown judge output {type(output).__name__}")


def assemble(
    protocol: Protocol,
    request: ScoreRequest,
    completed: Sequence[Completed[Sequence[QuestionOutput]]],
    accepted_at: float,
    deterministic: bool = False,
) -> list[ItemScore]:
    """Item scores from each item's answers (one per question, in the protocol's order), as the
    admission queue returns them: matched to the items by key, in the items' order;
    ``deterministic``: whether the judge scored in deterministic mode."""
    spec = protocol.spec
    now = time.monotonic()
    results = []
    for item, answer in zip(request.items, completed, strict=True):
        questions = [
            score
            for q, output in zip(spec.questions_for(item.category), answer.output, strict=True)
            for score in read_answers(q, output, spec.question_scale(q))
        ]
        metrics = compute_metrics(spec.metrics, {q.name: q.score for q in questions})
        results.append(
            ItemScore(
                id=item.id,
                protocol=spec.name,
                protocol_hash=protocol.hash,
                deterministic=deterministic,
                mode=request.mode,
                questions=questions,
                metrics=metrics,
                sc=metrics.get("sc"),
                pq=metrics.get("pq"),
                overall=metrics.get(spec.headline_metric),
                scored=all(q.score is not None for q in questions),
                timings=ScoreTimings(
                    queue_wait_s=answer.queued_s,
                    inference_s=answer.batch.duration_s,
                    total_s=now - accepted_at,
                    batch_items=answer.batch.size,
                ),
            )
        )
    return results


def record(metrics: RewardMetrics, request: ScoreRequest, results: Sequence[ItemScore]) -> None:
    for result in results:
        outcome = "scored" if result.scored else "unscored"
        metrics.items.labels(result.protocol, request.mode, outcome).inc()
        for question in result.questions:
            answered = "scored" if question.score is not None else "unscored"
            metrics.questions.labels(request.mode, answered).inc()
            if question.score_mass is not None:
                metrics.score_mass.observe(question.score_mass)


def user_text(items: Sequence[ScoreItem]) -> list[tuple[str, str | None]]:
    """Every user-written string that reaches the judge's prompt, by the field that holds it."""
    return [
        (f"items[{i}].{name}", text)
        for i, item in enumerate(items)
        for name, text in (
            ("instruction", item.instruction),
            ("category", item.category),
            ("hints", item.hints),
        )
    ]
