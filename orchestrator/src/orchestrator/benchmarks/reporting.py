"""How a benchmark is reported: its group-by keys, named subsets and headline aggregate.

A declaration, not code: GEdit-Bench's is built in (below); a manifest carries its own, either
under a ``reporting:`` key of a YAML manifest or in a ``reporting.yaml`` / ``reporting.json``
beside any manifest::

    reporting:
      group_by: [language, category]    # tables per language, one row per category
      subsets: {hard: is_hard}          # the same tables again on the rows where is_hard is true
      headline: macro                   # macro (mean of the row means) or micro (mean of items)
      overall: judge                    # deprecated, ignored: metrics are the protocol's
      labels: {category: task}          # optional display names of keys
      statistics: kris                  # optional: a benchmark's official statistics, computed
                                        # as its authors' script does (benchmarks/statistics.py)
      metric_names: {quality: vq}       # optional: the official names -> this run's metric names

``group_by`` keys and subset columns are item fields (``category``, ``language``) or any other
column of the manifest (kept in ``Item.extra``). The run folder keeps the declaration in
reporting.json, so ``editbench report`` and ``editbench compare`` need no benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator import safe_yaml
from orchestrator.benchmarks.items import BenchmarkError, Item, Problems
from orchestrator.benchmarks.statistics import StatisticsName

ITEM_FIELDS = ("category", "language")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class Reporting(BaseModel):
    """A benchmark's reporting declaration (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_by: list[str] = Field(default_factory=lambda: ["category"], min_length=1)
    subsets: dict[str, str] = Field(default_factory=dict)
    headline: Literal["macro", "micro"] = "macro"
    # Deprecated and ignored (kept so older reporting files load): every metric, GEdit's
    # sqrt(SC*PQ) included, is the judge protocol's, computed by the reward service only.
    overall: Literal["judge", "sqrt_sc_pq"] = "judge"
    labels: dict[str, str] = Field(
        default_factory=dict, description="Display names of keys, e.g. category: task_type."
    )
    reference: str | None = Field(
        default=None, description="Where these rules come from (a script, a paper)."
    )
    statistics: StatisticsName | None = Field(
        default=None,
        description="The benchmark's official statistics (tables and headline, computed as its "
        "authors' script does), shown beside the declared tables.",
    )
    metric_names: dict[str, str] = Field(
        default_factory=dict,
        description="The official statistics' metric names -> the names this run's protocol "
        "gives them (default: the same).",
    )

    @field_validator("group_by", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @property
    def split_by(self) -> list[str]:
        """Keys that make separate tables (all group-by keys but the last)."""
        return self.group_by[:-1]

    @property
    def row_key(self) -> str:
        """The key of a table's rows (the last group-by key)."""
        return self.group_by[-1]

    def label(self, key: str) -> str:
        return self.labels.get(key, key)

    def columns(self) -> list[str]:
        return [*self.group_by, *self.subsets.values()]

    def is_default(self) -> bool:
        return self == Reporting()


GEDIT_REPORTING = Reporting(
    group_by=["language", "category"],
    subsets={"intersection": "Intersection_exist"},
    headline="macro",
    overall="sqrt_sc_pq",
    labels={"category": "task_type", "language": "instruction_language"},
    reference=(
        "GEdit-Bench/calculate_statistics.py of stepfun-ai/Step1X-Edit: per instruction "
        "language, per task_type the mean of SC, PQ and sqrt(SC*PQ) per item; 'Average' is the "
        "unweighted mean over task types; the same on the Intersection_exist rows"
    ),
)


IMGEDIT_REPORTING = Reporting(
    group_by=["category"],
    headline="macro",
    labels={"category": "edit_type"},
    statistics="imgedit",
    reference=(
        "ImgEdit (PKU-YuanGroup/ImgEdit@547185d) Benchmark/Basic/step1_get_avgscore.py, "
        "step2_typescore.py: per item the mean of its three 1-5 scores, per edit_type the mean; "
        "Overall = mean of the nine edit types"
    ),
)

IMGEDIT_UGE_REPORTING = Reporting(
    group_by=["category"],
    headline="micro",
    statistics="imgedit",
    reference=(
        "ImgEdit (PKU-YuanGroup/ImgEdit@547185d) Benchmark/UGE/get_average_score.py: the mean "
        "over all items of each item's mean 1-5 score"
    ),
)

KRIS_REPORTING = Reporting(
    group_by=["knowledge_type", "category"],
    headline="micro",
    labels={"category": "task"},
    statistics="kris",
    reference=(
        "KRIS-Bench's tables as BAGEL's eval/gen/kris/summarize.py computes them: scores "
        "(s-1)*25; per reasoning dimension VC, VQ, IF, KP and the pooled AVG; per knowledge "
        "type and Overall the pooled AVG"
    ),
)

RISE_REPORTING = Reporting(
    group_by=["category"],
    headline="micro",
    statistics="rise",
    reference=(
        "RISEBench (PhoenixZ810/RISEBench@5f22651) gpt_eval.py: per item a weighted score and "
        "completion (every dimension 5); per category and Overall the mean score and accuracy; "
        "headline Overall accuracy (%)"
    ),
)


def value_of(item: object, key: str) -> Any:
    """A column of an item, plan row or result row: its field, else a manifest column in extra."""
    if key in ITEM_FIELDS:
        return getattr(item, key, None)
    extra = getattr(item, "extra", None) or {}
    if key in extra:
        return extra[key]
    # Run folders made before the published spelling was kept hold intersection_exist.
    folded = key.casefold()
    return next((v for k, v in extra.items() if k.casefold() == folded), None)


def truthy(value: Any) -> bool:
    """A subset column's value as a bool: true/false, 1/0, yes/no (CSV gives strings)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


def parse_reporting(data: Any, where: str) -> Reporting:
    if not isinstance(data, Mapping):
        raise BenchmarkError(f"{where}: 'reporting' must be a mapping")
    try:
        return Reporting.model_validate(dict(data))
    except ValidationError as exc:
        problems = Problems()
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "reporting"
            problems.add(f"{where}: reporting.{field}: {error['msg']}")
        problems.raise_if_any(where)
        raise  # unreachable: a ValidationError has at least one error


def check_reporting(reporting: Reporting, items: Sequence[Item], where: str) -> None:
    """Every declared column exists on some item, and subset columns read as yes/no."""
    present = set(ITEM_FIELDS) | {key for item in items for key in item.extra}
    missing = [c for c in reporting.columns() if c not in present]
    if missing:
        raise BenchmarkError(
            f"{where}: reporting names column(s) no item has: {', '.join(missing)}"
        )
    problems = Problems()
    for name, column in reporting.subsets.items():
        for item in items:
            try:
                truthy(item.extra.get(column))
            except ValueError as exc:
                problems.add(f"{where}: item {item.id!r}: subset {name!r} column {column!r}: {exc}")
    problems.raise_if_any(where)


def manifest_reporting(path: Path) -> tuple[Reporting, str] | None:
    """The declaration a manifest carries (YAML ``reporting:`` key or a sidecar file), if any."""
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            data = safe_yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        except yaml.YAMLError:
            data = None  # the item reader reports the syntax error with its line
        if isinstance(data, dict) and "reporting" in data:
            return parse_reporting(data["reporting"], str(path)), str(path)
    for name in ("reporting.yaml", "reporting.yml", "reporting.json"):
        sidecar = path.parent / name
        if not sidecar.is_file():
            continue
        try:
            text = sidecar.read_text(encoding="utf-8-sig")
            data = json.loads(text) if name.endswith(".json") else safe_yaml.safe_load(text)
        except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:
            # ValueError: not UTF-8, or JSON that does not parse (both are ValueErrors)
            raise BenchmarkError(f"{sidecar}: does not parse: {exc}") from None
        if isinstance(data, dict) and "reporting" in data:
            data = data["reporting"]
        return parse_reporting(data, str(sidecar)), str(sidecar)
    return None
