"""A protocol's metrics: how its named scores combine into what it reports, computed here only.

Each metric has a name, a label and exactly one rule over names that are either the protocol's
scores (what its questions answer) or metrics defined above it:

    score: editing_success                  # one score, as it is
    min: [editing_success, over_editing]    # also max, mean
    weighted_mean: {accuracy: 2, quality: 1}
    geometric_mean: [sc, pq]                # GEdit's overall: sqrt(sc * pq)

A metric is None where any value it reads is None (an unscored question is never replaced by a
guess). A name resolves to a metric defined above first, then to a score, so a metric may take
the name of the one score it reads (``overall: {score: overall}``).

Absent is not unscored. Where a protocol asks different questions of different categories
(``question_sets``), a score its set does not ask is absent for the item: a rule then runs over
the inputs the item has (a mean of the three dimensions it was asked; weights renormalised over
those present), and a metric none of whose inputs the item has is absent too (left out of the
item's metrics, so no mean counts it), never zero and never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared_schemas import MetricInfo

_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
RuleKind = Literal["score", "min", "max", "mean", "weighted_mean", "geometric_mean"]
RULE_KINDS: tuple[RuleKind, ...] = (
    "score",
    "min",
    "max",
    "mean",
    "weighted_mean",
    "geometric_mean",
)


class MetricSpec(BaseModel):
    """One metric of a protocol (the YAML's ``metrics`` list); exactly one rule field is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    label: str = Field(min_length=1, max_length=200)
    description: str = ""
    score: str | None = None
    min: list[str] | None = Field(default=None, min_length=1)
    max: list[str] | None = Field(default=None, min_length=1)
    mean: list[str] | None = Field(default=None, min_length=1)
    weighted_mean: dict[str, float] | None = Field(default=None, min_length=1)
    geometric_mean: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_rule(self) -> Self:
        given = [kind for kind in RULE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"metric {self.name!r} needs exactly one rule of {', '.join(RULE_KINDS)}"
                + (f" (it has {', '.join(given)})" if given else "")
            )
        if self.weighted_mean is not None:
            bad = [k for k, w in self.weighted_mean.items() if not (math.isfinite(w) and w > 0)]
            if bad:
                raise ValueError(f"metric {self.name!r}: weights must be positive ({bad})")
        return self

    @property
    def kind(self) -> RuleKind:
        return next(kind for kind in RULE_KINDS if getattr(self, kind) is not None)

    @property
    def inputs(self) -> list[str]:
        """The names the rule reads, in order."""
        if self.score is not None:
            return [self.score]
        if self.weighted_mean is not None:
            return list(self.weighted_mean)
        values: list[str] = getattr(self, self.kind)
        return values

    def describe(self) -> str:
        """The rule in one line, e.g. ``weighted_mean(accuracy*2, quality*1)``."""
        if self.score is not None:
            return self.score
        if self.weighted_mean is not None:
            terms = ", ".join(f"{k}*{w:g}" for k, w in self.weighted_mean.items())
            return f"weighted_mean({terms})"
        return f"{self.kind}({', '.join(self.inputs)})"

    def info(self) -> MetricInfo:
        return MetricInfo(name=self.name, label=self.label, rule=self.describe())


def check_metrics(metrics: Sequence[MetricSpec], scores: Sequence[str], headline: str) -> None:
    """Raise ValueError unless names are unique, every rule reads a score or a metric defined
    above it, and the headline is a metric."""
    known = set(scores)
    defined: set[str] = set()
    for metric in metrics:
        if metric.name in defined:
            raise ValueError(f"metric {metric.name!r} is defined twice")
        unknown = [n for n in metric.inputs if n not in defined and n not in known]
        if unknown:
            raise ValueError(
                f"metric {metric.name!r} reads {unknown}, which is neither a score of this "
                f"protocol ({', '.join(scores)}) nor a metric defined above it"
            )
        defined.add(metric.name)
    if headline not in defined:
        raise ValueError(f"headline {headline!r} is not one of the metrics ({sorted(defined)})")


def present_metrics(metrics: Sequence[MetricSpec], scores: Sequence[str]) -> list[str]:
    """The metrics an item has when it was asked for ``scores`` (in the protocol's order): those
    reading at least one score or metric it has."""
    present = set(scores)
    names = []
    for metric in metrics:
        if metric.name not in names and any(n in present for n in metric.inputs):
            present.add(metric.name)
            names.append(metric.name)
    return names


def compute_metrics(
    metrics: Sequence[MetricSpec], scores: Mapping[str, float | None]
) -> dict[str, float | None]:
    """Every metric one item has, in the protocol's order, from the named scores it was asked
    (``scores``: None where unscored; a score it was not asked is absent from the mapping)."""
    values: dict[str, float | None] = {}
    for metric in metrics:
        inputs = [
            (n, values[n] if n in values else scores[n])
            for n in metric.inputs
            if n in values or n in scores
        ]
        if inputs:
            values[metric.name] = _apply(metric, inputs)
    return values


def _apply(metric: MetricSpec, inputs: list[tuple[str, float | None]]) -> float | None:
    if any(v is None for _, v in inputs):
        return None
    numbers = [float(v) for _, v in inputs if v is not None]
    kind = metric.kind
    if kind == "score":
        return numbers[0]
    if kind == "min":
        return min(numbers)
    if kind == "max":
        return max(numbers)
    if kind == "mean":
        return math.fsum(numbers) / len(numbers)
    if kind == "weighted_mean":
        table = metric.weighted_mean or {}
        weights = [table[n] for n, _ in inputs]
        return math.fsum(w * v for w, v in zip(weights, numbers, strict=True)) / math.fsum(weights)
    if any(v < 0 for v in numbers):
        return None  # no real geometric mean (scales start at 0 or above: cannot happen)
    if len(numbers) == 2:  # exactly GEdit-Bench's math.sqrt(SC * PQ)
        return math.sqrt(numbers[0] * numbers[1])
    return float(math.prod(numbers) ** (1.0 / len(numbers)))
