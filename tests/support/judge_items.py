"""Judge items for backend tests: images once per item, questions naming them by index."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from PIL.Image import Image

from reward_service.backends.base import JudgeItem, JudgeQuestion


def pairs(items: Sequence[JudgeItem[Image]]) -> Iterator[tuple[JudgeItem[Image], JudgeQuestion]]:
    """Every question with its item, in the order a backend answers them."""
    for item in items:
        for question in item.questions:
            yield item, question


def alone(item: JudgeItem[Image], question: JudgeQuestion) -> list[JudgeItem[Image]]:
    """A batch of one: the question with its item's images and nothing else."""
    return [JudgeItem(item.images, (question,))]


def chat_content(item: JudgeItem[Image], question: JudgeQuestion) -> list[dict[str, Any]]:
    """The question's user turn as a processor's chat template takes it, images in place."""
    return [
        {"type": "text", "text": part}
        if isinstance(part, str)
        else {"type": "image", "image": item.images[part]}
        for part in question.content
    ]
