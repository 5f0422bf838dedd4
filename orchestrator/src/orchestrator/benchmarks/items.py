"""A benchmark's items, and the error a benchmark that cannot be read raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Item.extra key: which variant of a protocol's questions the judge asks of the item
# (ScoreItem.variant), where its benchmark's official judging shows its images otherwise.
JUDGE_VARIANT = "judge_variant"


class BenchmarkError(ValueError):
    """A benchmark that cannot be read, with a message that says where and why."""


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark item. ``source`` says where its image lives (for people, not for reading)."""

    id: str
    category: str
    instruction: str
    source: str
    language: str | None = None
    hints: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
