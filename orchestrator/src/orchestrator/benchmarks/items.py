"""A benchmark's items, and the error a benchmark that cannot be read raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Item.extra key: which variant of a protocol's questions the judge asks of the item
# (ScoreItem.variant), where its benchmark's official judging shows its images otherwise.
JUDGE_VARIANT = "judge_variant"
# Item.extra key: a RISEBench item its official script scores as consistency-free though it is
# not (benchmarks/rise.py says why); its consistency is judged and its completion needs it.
SCORED_AS_FREE = "scored_as_consistency_free"


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


SHOWN_PROBLEMS = 20


class Problems:
    """Every problem found while reading a benchmark, reported together in one BenchmarkError:
    a user fixing a damaged file learns of all its bad lines in one go, not one per attempt."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        self.found.append(message)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record a BenchmarkError raised inside (one row's problem) and go on."""
        try:
            yield
        except BenchmarkError as exc:
            self.add(str(exc))

    def raise_if_any(self, where: object, hint: str = "") -> None:
        """One BenchmarkError listing every problem (the first 20, then a count); one problem
        alone is raised as it is."""
        if not self.found:
            return
        if len(self.found) == 1:
            raise BenchmarkError(self.found[0] + (f" ({hint})" if hint else ""))
        shown = "\n  ".join(self.found[:SHOWN_PROBLEMS])
        more = len(self.found) - SHOWN_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        how = f" ({hint})" if hint else ""
        raise BenchmarkError(f"{len(self.found)} problems in {where}{how}:\n  {shown}{tail}")
