"""From a score request to judge questions, and from the judge's outputs to item scores.

Images are decoded once per item and shared by every question that shows them. Questions are
laid out item by item, in the protocol's question order, and read back in the same order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL.Image import Image

from reward_service.backends.base import (
    GeneratedText,
    JudgeQuestion,
    QuestionOutput,
    ScoreTokenLogprobs,
)
from reward_service.batcher import Completed
from reward_service.metrics import RewardMetrics
from reward_service.parsing import parse_score
from reward_service.protocols import Protocol, render
from reward_service.protocols.definition import ImageSlot
from reward_service.scoring import combine, expected_score
from service_kit.images import decode_image
from shared_schemas import ItemScore, QuestionScore, ScoreItem, ScoreRequest, ScoreTimings
from shared_schemas.scores import QuestionGroup


@dataclass(frozen=True, slots=True)
class ItemImages:
    source: Image
    edited: Image


def decode_items(items: Sequence[ScoreItem], max_pixels: int) -> list[ItemImages]:
    """Decode every image, or raise InvalidImage / ImageTooLarge naming the field at fault."""
    return [
        ItemImages(
            source=decode_image(
                item.source_image, max_pixels=max_pixels, param=f"items[{i}].source_image"
            ),
            edited=decode_image(
                item.edited_image, max_pixels=max_pixels, param=f"items[{i}].edited_image"
            ),
        )
        for i, item in enumerate(items)
    ]


ItemQuestions = tuple[JudgeQuestion, ...]


def build_questions(
    protocol: Protocol, request: ScoreRequest, images: Sequence[ItemImages], request_id: str
) -> list[ItemQuestions]:
    """Every item's questions, in the protocol's order; an item is judged in one batch."""
    items = []
    for index, (item, item_images) in enumerate(zip(request.items, images, strict=True)):
        questions = []
        rendered = render(
            protocol.spec,
            instruction=item.instruction,
            category=item.category,
            hints=item.hints,
            mode=request.mode,
        )
        for question in rendered:
            content = tuple(
                getattr(item_images, part.role) if isinstance(part, ImageSlot) else part
                for part in question.parts
            )
            questions.append(
                JudgeQuestion(
                    key=f"{request_id}/{index}/{question.name}",
                    system=question.system or None,
                    content=content,
                    mode=request.mode,
                    max_new_tokens=request.max_new_tokens,
                )
            )
        items.append(tuple(questions))
    return items


def item_cost(questions: ItemQuestions) -> int:
    """Images one item puts through the model: questions showing the same images share them."""
    shown = {tuple(id(image) for image in q.images) for q in questions}
    return max(1, sum(len(images) for images in shown))


def read_output(name: str, group: QuestionGroup | None, output: QuestionOutput) -> QuestionScore:
    """One question's score from the judge's raw output; never a guess."""
    if isinstance(output, ScoreTokenLogprobs):
        expected = expected_score(output.first, output.after_one)
        if expected is None:
            broken = any(math.isnan(v) for v in (*output.first, *output.after_one))
            return QuestionScore(
                name=name,
                group=group,
                score=None,
                error="the model's probabilities are NaN"
                if broken
                else "the judge gave no probability to any score",
            )
        return QuestionScore(
            name=name,
            group=group,
            score=expected.score,
            distribution=list(expected.distribution),
            score_mass=expected.score_mass,
        )
    if isinstance(output, GeneratedText):
        parsed = parse_score(output.text)
        return QuestionScore(
            name=name, group=group, score=parsed.score, raw_text=output.text, error=parsed.error
        )
    raise TypeError(f"unknown judge output {type(output).__name__}")


def assemble(
    protocol: Protocol,
    request: ScoreRequest,
    completed: Sequence[Completed[Sequence[QuestionOutput]]],
    accepted_at: float,
) -> list[ItemScore]:
    """Item scores from each item's answers (one per question, in the protocol's order)."""
    spec = protocol.spec
    if len(completed) != len(request.items):
        raise ValueError(f"{len(completed)} answers for {len(request.items)} items")
    now = time.monotonic()
    results = []
    for item, answer in zip(request.items, completed, strict=True):
        questions = [
            read_output(q.name, q.group, output)
            for q, output in zip(spec.questions, answer.output, strict=True)
        ]
        combined = combine(spec.combine, [(q.group, q.score) for q in questions])
        results.append(
            ItemScore(
                id=item.id,
                protocol=spec.name,
                protocol_hash=protocol.hash,
                mode=request.mode,
                questions=questions,
                sc=combined.sc,
                pq=combined.pq,
                overall=combined.overall,
                scored=all(q.score is not None for q in questions),
                timings=ScoreTimings(
                    queue_wait_s=answer.queued_s,
                    inference_s=answer.batch.duration_s,
                    total_s=now - accepted_at,
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
