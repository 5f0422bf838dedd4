"""compare.json, typed: what ``editbench compare`` found (orchestrator.compare builds it).

Written by ``write_comparison`` and read back by ``read_comparison``, the one place each;
compare.html and the terminal tables are drawn from the same model. ``schema`` says which layout
a file has (1: this one; a file without the key was written before it was typed, with the same
fields). Unknown fields are ignored, so a file written by a newer editbench still reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.benchmarks.reporting import Reporting
from orchestrator.metrics import MetricSet

COMPARE_SCHEMA = 1


class ComparisonError(ValueError):
    """A compare.json that is not one (damaged JSON or fields), naming the file and the field."""


class ComparePart(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Difference(ComparePart):
    """A paired difference ``run - baseline`` over some items, with its 95% interval."""

    pairs: int = Field(description="Items paired (same id and protocol hash, scored in both).")
    n: int
    mean_diff: float | None
    ci95: list[float] | None
    method: str
    p: float | None = Field(description="Paired t-test (None for an Average: one interval).")
    significant: bool
    better: int
    worse: int
    equal: int
    p_holm: float | None = Field(default=None, description="Rows: Holm-adjusted over the table.")
    significant_uncorrected: bool | None = None


class RunMean(ComparePart):
    n: int
    mean: float | None


class AverageMean(ComparePart):
    rows: int = Field(description="Rows with a mean (the Average's terms).")
    mean: float | None


class CompareRow(ComparePart):
    """One row of a declared table: each run's mean, and per other run its difference."""

    runs: list[RunMean]
    diffs: list[Difference]


class CompareAverage(ComparePart):
    runs: list[AverageMean]
    diffs: list[Difference]


class CompareMicro(ComparePart):
    diffs: list[Difference]


class CompareTable(ComparePart):
    """One of the baseline's declared tables for one metric, every run against the baseline."""

    title: str
    split: dict[str, str]
    subset: str | None
    row_key: str
    row_label: str
    rows: dict[str, CompareRow]
    average: CompareAverage
    micro: CompareMicro


class MetricComparison(ComparePart):
    name: str
    label: str
    rule: str
    tables: list[CompareTable]


class OfficialHeadline(ComparePart):
    """A run's headline as its benchmark's authors compute it (KRIS, ImgEdit, RISE)."""

    run: str
    statistics: str | None
    headline_label: str | None
    headline: float | None


class RunDescription(ComparePart):
    """A compared run: where, what judged and edited it, its settings and its own warnings."""

    label: str
    path: str
    benchmark: str | None
    benchmark_fingerprint: str | None
    editor: list[str]
    judge: list[str]
    protocol_hash: list[str]
    settings: dict[str, Any] = Field(description="The settings that were set, for the table.")
    items: int
    scored: int
    warnings: list[str] = Field(default_factory=list)
    identity: dict[str, Any] = Field(
        default_factory=dict, description="Every compared setting (None where unset)."
    )


class SettingDifference(ComparePart):
    setting: str
    values: list[Any] = Field(description="Each run's value, in the runs' order.")


class MovedPair(ComparePart):
    item_id: str
    category: str
    instruction: str
    baseline: float
    run: float
    diff: float
    baseline_thumb: str = Field(description="Inside the baseline's run folder.")
    run_thumb: str = Field(description="Inside this run's folder.")


class MovedItems(ComparePart):
    """The paired items whose metric moved most, for one run against the baseline."""

    label: str
    pairs: int
    items: list[MovedPair]


class Comparison(ComparePart):
    """compare.json's body. The first run is the baseline."""

    schema_version: int = Field(default=COMPARE_SCHEMA, alias="schema")
    metric: str = Field(description="The metric ``tables`` shows (the headline by default).")
    metric_label: str
    metric_set: MetricSet
    official: list[OfficialHeadline] = Field(default_factory=list)
    baseline: str
    runs: list[RunDescription]
    reporting: Reporting
    intervals: dict[str, str]
    tables: list[CompareTable]
    metrics: list[MetricComparison] = Field(
        default_factory=list, description="Every metric of the protocol, with its tables."
    )
    warnings: list[str] = Field(default_factory=list)
    differences: list[SettingDifference] = Field(default_factory=list)
    moved: list[MovedItems] = Field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def comparison_text(comparison: Comparison) -> str:
    """compare.json's text (strict JSON: no NaN)."""
    return json.dumps(comparison.dump(), ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def read_comparison(path: Path) -> Comparison:
    """A compare.json as a `Comparison`; ComparisonError naming the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ComparisonError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})"
        ) from None
    try:
        return Comparison.model_validate({"schema": 0, **data} if isinstance(data, dict) else data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "the file"
        raise ComparisonError(f"{path}: {where}: {error['msg']}") from None
