"""Benchmarks' official statistics, computed as their authors' scripts compute them.

Each takes the judged items (their category, their benchmark fields, and their per-item metric
values by name) and returns typed tables and the headline number the benchmark publishes:

- ``imgedit`` (PKU-YuanGroup/ImgEdit@547185d, Benchmark/Basic/step1_get_avgscore.py and
  step2_typescore.py; Benchmark/UGE/get_average_score.py): an item's score is the mean of its
  three 1-5 dimensions rounded to 2 places; an edit type's, the mean of its items rounded to 2;
  Basic's "Overall" (the leaderboard's) is the mean of the nine edit types (Qwen-Image's report:
  38.47 / 9 = 4.27); UGE's is the mean over all items, rounded to 2.
- ``kris`` (BAGEL eval/gen/kris/summarize.py, read at ByteDance-Seed/Bagel@a53eea0, "fix KRIS
  normalization", which replaced f8819fc's s / 5 * 100 and re-made EVAL.md's KRIS-Bench tables):
  every 1-5 score becomes (s - 1) * 25; per reasoning dimension the mean of each metric (VC, VQ,
  IF, KP where the dimension has it) and AVG, the mean of all its scores pooled; per task the
  same metrics; per knowledge type and Overall, the pooled AVG. The headline is Overall AVG.
- ``rise`` (PhoenixZ810/RISEBench@5f22651, gpt_eval.py): logical items' 0/1 answers become
  4 * min(s, 1) + 1; an item's score is 0.3 C + 0.5 R + 0.2 P (temporal, causal, spatial;
  0.2 P + 0.8 R when consistency-free, and, as the script's pandas reads a missing value, for
  every such item without a consistency_free value where the data has that column: its
  completion still needs C), 0.3 C + 0.7 R (logical), halved (at least 1) when R is
  1; an item is complete when every dimension it has is 5. Per category and Overall: the mean
  score, 25 * (score - 1), and accuracy (share complete; an item the judge could not score
  counts as not complete, as the script's NaN == 5 does). The headline is Overall accuracy in
  percent, the leaderboard's "Overall (%)".

The metric names read are the official protocols' (``IMGEDIT_METRICS`` and so on); a reporting
declaration may map them to other names (``Reporting.metric_names``). One run judged with the
built-in ``kris`` or ``rise`` protocol carries every dimension each category is asked (knowledge
only on KRIS's knowledge tasks; a RISE logical puzzle's 0/1 answers as ``logical_consistency``
and ``logical_reasoning``), so the tables come from that one run. ``required_dimensions`` says
what the tables read per item; where a run's answers lack one (absent, not unscored: a
protocol that is not the benchmark's, such as viescore), ``official_statistics`` adds a note
naming what is missing and the protocol to use, and the preflight says the same before any edit
(``protocol_gaps``, ``describe_gaps``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.benchmarks.items import JUDGE_VARIANT, SCORED_AS_FREE

StatisticsName = Literal["imgedit", "kris", "rise"]


@dataclass(frozen=True, slots=True)
class JudgedItem:
    """What the statistics read of one item: who it is and what the judge said."""

    item_id: str
    category: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float | None] = field(default_factory=dict)


class StatRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    values: list[float | None]
    n: int = Field(description="Items behind the row.")


class StatTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str
    columns: list[str]
    rows: list[StatRow]

    def row(self, label: str) -> StatRow:
        return next(r for r in self.rows if r.label == label)


class OfficialStatistics(BaseModel):
    """A benchmark's tables and headline, as its authors compute them."""

    model_config = ConfigDict(frozen=True)

    name: StatisticsName
    reference: str
    headline_label: str
    headline: float | None
    tables: list[StatTable]
    notes: list[str] = Field(
        default_factory=list,
        description="What keeps these numbers from being the published ones (items the "
        "built-in protocols cannot judge officially, items left out because the editor could "
        "not take them, dimensions no answer carried).",
    )

    def table(self, title: str) -> StatTable:
        return next(t for t in self.tables if t.title == title)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round2(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _value(item: JudgedItem, name: str, names: Mapping[str, str]) -> float | None:
    value = item.metrics.get(names.get(name, name))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


# --- ImgEdit ---------------------------------------------------------------------------------

IMGEDIT_METRICS = ("adherence", "quality", "preservation")
IMGEDIT_TYPES = (
    "add",
    "adjust",
    "extract",
    "replace",
    "remove",
    "background",
    "style",
    "compose",
    "action",
)


def imgedit_item_score(item: JudgedItem, names: Mapping[str, str]) -> float | None:
    """step1: the mean of the parsed dimension scores, rounded to 2 (None when none parsed)."""
    scores = [v for m in IMGEDIT_METRICS if (v := _value(item, m, names)) is not None]
    return _round2(_mean(scores))


UGE_METRIC = "overall"  # the built-in imgedit-uge protocol's one score


def uge_item_score(item: JudgedItem, names: Mapping[str, str]) -> float | None:
    """get_average_score.py: the item's score (imgedit-uge's one ``overall``; a run judged with
    the three Basic dimensions: their mean), rounded to 2."""
    value = _value(item, UGE_METRIC, names)
    return _round2(value) if value is not None else imgedit_item_score(item, names)


def imgedit_statistics(
    items: Sequence[JudgedItem], names: Mapping[str, str] | None = None
) -> OfficialStatistics:
    names = names or {}
    suites = {str(i.extra.get("suite", "basic")) for i in items} or {"basic"}
    if suites == {"uge"}:
        scored = [(i, s) for i in items if (s := uge_item_score(i, names)) is not None]
        overall = _round2(_mean([s for _, s in scored]))
        table = StatTable(
            title="ImgEdit UGE",
            columns=["score"],
            rows=[StatRow(label="Overall", values=[overall], n=len(scored))],
        )
        return OfficialStatistics(
            name="imgedit",
            reference="ImgEdit Benchmark/UGE/get_average_score.py",
            headline_label="UGE score (1-5)",
            headline=overall,
            tables=[table],
        )
    scored = [(i, s) for i in items if (s := imgedit_item_score(i, names)) is not None]
    by_type: dict[str, list[float]] = {}
    for item, score in scored:
        by_type.setdefault(item.category, []).append(score)
    order = [t for t in IMGEDIT_TYPES if t in by_type] + sorted(set(by_type) - set(IMGEDIT_TYPES))
    type_scores = {t: _round2(_mean(by_type[t])) for t in order}
    rows = [StatRow(label=t, values=[type_scores[t]], n=len(by_type[t])) for t in order]
    known = [v for v in type_scores.values() if v is not None]
    overall = _round2(_mean(known))
    rows.append(StatRow(label="Overall", values=[overall], n=len(scored)))
    return OfficialStatistics(
        name="imgedit",
        reference="ImgEdit Benchmark/Basic/step1_get_avgscore.py + step2_typescore.py; "
        "Overall = mean of the edit types",
        headline_label="Overall (1-5)",
        headline=overall,
        tables=[StatTable(title="ImgEdit edit types", columns=["score"], rows=rows)],
    )


# --- KRIS-Bench ------------------------------------------------------------------------------

KRIS_METRICS = ("consistency", "quality", "instruction", "knowledge")
KRIS_SHORT = {"consistency": "VC", "quality": "VQ", "instruction": "IF", "knowledge": "KP"}
# Which metrics each reasoning dimension reports (summarize.py, kris_benchamrk_metric).
KRIS_DIMENSION_METRICS: dict[str, tuple[str, ...]] = {
    "Attribute Perception": ("consistency", "quality", "instruction"),
    "Spatial Perception": ("consistency", "quality", "instruction"),
    "Temporal Prediction": ("consistency", "quality", "instruction"),
    "Social Science": ("consistency", "quality", "instruction", "knowledge"),
    "Natural Science": ("consistency", "quality", "instruction", "knowledge"),
    "Logical Reasoning": ("consistency", "quality", "instruction", "knowledge"),
    "Instruction Decomposition": ("consistency", "quality", "instruction"),
}
KRIS_KNOWLEDGE_TYPES: dict[str, tuple[str, ...]] = {
    "Factual Knowledge": ("Attribute Perception", "Spatial Perception", "Temporal Prediction"),
    "Conceptual Knowledge": ("Social Science", "Natural Science"),
    "Procedural Knowledge": ("Logical Reasoning", "Instruction Decomposition"),
}


def kris_statistics(
    items: Sequence[JudgedItem],
    names: Mapping[str, str] | None = None,
    scale: tuple[float, float] = (1.0, 5.0),
) -> OfficialStatistics:
    names = names or {}
    low, high = scale

    def normalize(value: float) -> float:
        return (value - low) * 100.0 / (high - low)

    per_dim: dict[str, dict[str, list[float]]] = {d: {} for d in KRIS_DIMENSION_METRICS}
    flat: dict[str, list[float]] = {d: [] for d in KRIS_DIMENSION_METRICS}
    per_task: dict[str, dict[str, list[float]]] = {}
    task_dim: dict[str, str] = {}
    dim_items: dict[str, int] = dict.fromkeys(KRIS_DIMENSION_METRICS, 0)
    for item in items:
        dim = str(item.extra.get("dimension", ""))
        if dim not in KRIS_DIMENSION_METRICS:
            continue
        dim_items[dim] += 1
        task_dim[item.category] = dim
        task_scores = per_task.setdefault(item.category, {})
        for metric in KRIS_DIMENSION_METRICS[dim]:
            value = _value(item, metric, names)
            if value is None:
                continue
            norm = normalize(value)
            task_scores.setdefault(metric, []).append(norm)
            per_dim[dim].setdefault(metric, []).append(norm)
            flat[dim].append(norm)
    columns = [KRIS_SHORT[m] for m in KRIS_METRICS] + ["AVG"]
    dim_rows = []
    for dim, metrics in KRIS_DIMENSION_METRICS.items():
        if not dim_items[dim]:
            continue
        values = [_mean(per_dim[dim].get(m, [])) if m in metrics else None for m in KRIS_METRICS]
        dim_rows.append(StatRow(label=dim, values=[*values, _mean(flat[dim])], n=dim_items[dim]))
    task_rows = []
    for dim, metrics in KRIS_DIMENSION_METRICS.items():
        for task in sorted(t for t, d in task_dim.items() if d == dim):
            values = [
                _mean(per_task[task].get(m, [])) if m in metrics else None for m in KRIS_METRICS
            ]
            n = sum(1 for i in items if i.category == task)
            task_rows.append(StatRow(label=task, values=values, n=n))
    type_rows = []
    for kind, dims in KRIS_KNOWLEDGE_TYPES.items():
        pooled = [v for d in dims for v in flat[d]]
        n = sum(dim_items[d] for d in dims)
        if n:
            type_rows.append(StatRow(label=kind, values=[_mean(pooled)], n=n))
    notes = []
    unlaid = sum(
        1 for i in items if i.category == "temporal_prediction" and not i.extra.get(JUDGE_VARIANT)
    )
    if unlaid:
        notes.append(
            f"{unlaid} temporal_prediction item(s) have reference frames other than the other "
            "three of frames 1-4 in order: judged without metrics_temporal_prediction.py's frame "
            "layout"
        )
    everything = [v for d in KRIS_DIMENSION_METRICS for v in flat[d]]
    overall = _mean(everything)
    type_rows.append(StatRow(label="Overall", values=[overall], n=sum(dim_items.values())))
    return OfficialStatistics(
        name="kris",
        reference=(
            "BAGEL eval/gen/kris/summarize.py (Bagel@a53eea0, KRIS-Bench's tables): "
            "(s-1)*25, pooled AVG"
        ),
        headline_label="Overall AVG (0-100)",
        headline=overall,
        tables=[
            StatTable(title="KRIS-Bench reasoning dimensions", columns=columns, rows=dim_rows),
            StatTable(title="KRIS-Bench knowledge types", columns=["AVG"], rows=type_rows),
            StatTable(title="KRIS-Bench tasks", columns=columns[:-1], rows=task_rows),
        ],
        notes=notes,
    )


# --- RISEBench -------------------------------------------------------------------------------

RISE_METRICS = ("consistency", "reasoning", "plausibility")
RISE_CATEGORIES = {
    "temporal_reasoning": "Temporal",
    "causal_reasoning": "Causal",
    "spatial_reasoning": "Spatial",
    "logical_reasoning": "Logical",
}


def _truthy(value: Any) -> bool:
    return value is not None and value == value and bool(value)


@dataclass(frozen=True, slots=True)
class RiseScores:
    consistency: float | None
    reasoning: float | None
    plausibility: float | None
    score: float | None
    complete: int


def _dimension(
    item: JudgedItem, name: str, logical: bool, names: Mapping[str, str]
) -> float | None:
    """A dimension's answer: a logical puzzle's 0/1 one is ``logical_<name>`` under the merged
    ``rise`` protocol, ``<name>`` under the superseded ``rise-logical``."""
    if logical:
        value = _value(item, f"logical_{name}", names)
        if value is not None or f"logical_{name}" in item.metrics:
            return value
    return _value(item, name, names)


def rise_item(item: JudgedItem, names: Mapping[str, str]) -> RiseScores:
    """One item as gpt_eval.py's main() and calculate_score/calculate_completion see it."""
    logical = item.category == "logical_reasoning"
    free = _truthy(item.extra.get("consistency_free"))
    c = None if free else _dimension(item, "consistency", logical, names)
    r = _dimension(item, "reasoning", logical, names)
    p = None if logical else _value(item, "plausibility", names)
    needed = [r] + ([] if free else [c]) + ([] if logical else [p])
    if any(v is None for v in needed):
        return RiseScores(None, None, None, None, 0)  # the script's "failed" match
    assert r is not None
    if logical:
        assert c is not None
        c, r = 4 * min(c, 1) + 1, 4 * min(r, 1) + 1
        score = 0.3 * c + 0.7 * r
        complete = int(c == 5 and r == 5)
    elif free:
        assert p is not None
        score = 0.2 * p + 0.8 * r
        complete = int(r == 5 and p == 5)
    else:
        assert c is not None and p is not None
        # SCORED_AS_FREE: the script's calculate_score reads a missing value as true.
        as_free = bool(item.extra.get(SCORED_AS_FREE))
        score = 0.2 * p + 0.8 * r if as_free else 0.3 * c + 0.5 * r + 0.2 * p
        complete = int(c == 5 and r == 5 and p == 5)
    if r == 1:
        score = max(score * 0.5, 1)
    return RiseScores(c, r, p, score, complete)


def rise_statistics(
    items: Sequence[JudgedItem], names: Mapping[str, str] | None = None
) -> OfficialStatistics:
    names = names or {}
    scored = [(item, rise_item(item, names)) for item in items]

    def percent(value: float | None) -> float | None:
        return None if value is None else 25 * (value - 1)

    def summary_row(label: str, group: Sequence[tuple[JudgedItem, RiseScores]]) -> StatRow:
        score = _mean([s.score for _, s in group if s.score is not None])
        accuracy = _mean([float(s.complete) for _, s in group])
        return StatRow(label=label, values=[score, percent(score), accuracy], n=len(group))

    def dims_row(label: str, group: Sequence[tuple[JudgedItem, RiseScores]]) -> StatRow:
        values: list[float | None] = []
        for attribute in ("reasoning", "consistency", "plausibility"):
            known = [v for _, s in group if (v := getattr(s, attribute)) is not None]
            values.append(percent(_mean(known)))
        return StatRow(label=label, values=values, n=len(group))

    groups = {
        label: [(i, s) for i, s in scored if i.category == category]
        for category, label in RISE_CATEGORIES.items()
    }
    present = {label: group for label, group in groups.items() if group}
    main_rows = [summary_row("Overall", scored)]
    main_rows += [summary_row(label, group) for label, group in present.items()]
    dim_rows = [dims_row("Overall", scored)]
    dim_rows += [dims_row(label, group) for label, group in present.items()]
    tables = [
        StatTable(
            title="RISEBench",
            columns=["Score-Origin", "Score-Percentage", "Accuracy"],
            rows=main_rows,
        ),
        StatTable(
            title="RISEBench dimensions (0-100)",
            columns=["Reasoning", "ApprConsistency", "VisualPlausibility"],
            rows=dim_rows,
        ),
    ]
    subtasks: dict[str, list[tuple[JudgedItem, RiseScores]]] = {}
    for item, scores in scored:
        if _truthy(item.extra.get("subtask")):
            subtasks.setdefault(str(item.extra["subtask"]), []).append((item, scores))
    if subtasks:
        tables.append(
            StatTable(
                title="RISEBench subtasks",
                columns=["Score-Origin", "Score-Percentage", "Accuracy"],
                rows=[summary_row(name, group) for name, group in sorted(subtasks.items())],
            )
        )
    accuracy = main_rows[0].values[2]
    notes: list[str] = []
    return OfficialStatistics(
        name="rise",
        reference="RISEBench gpt_eval.py (calculate_score, calculate_completion, main)",
        headline_label="Overall accuracy (%)",
        headline=None if accuracy is None else 100 * accuracy,
        tables=tables,
        notes=notes,
    )


# --- What each benchmark's statistics need of a judge protocol ---------------------------------

# The built-in protocol that gives every dimension the statistics read, for every category.
OFFICIAL_PROTOCOLS: dict[StatisticsName, str] = {
    "imgedit": "imgedit",
    "kris": "kris",
    "rise": "rise",
}
BENCHMARK_NAMES: dict[StatisticsName, str] = {
    "imgedit": "ImgEdit",
    "kris": "KRIS-Bench",
    "rise": "RISEBench",
}


def required_dimensions(
    name: StatisticsName, category: str, extra: Mapping[str, Any]
) -> list[tuple[str, ...]]:
    """The dimensions the official statistics read for one item, each as the names it may
    carry (any one will do); ImgEdit's step1 averages whatever it finds, so it needs none."""
    if name == "kris":
        dimension = str(extra.get("dimension", ""))
        return [(m,) for m in KRIS_DIMENSION_METRICS.get(dimension, ())]
    if name == "rise":
        free = _truthy(extra.get("consistency_free"))
        needed: list[tuple[str, ...]]
        if category == "logical_reasoning":
            needed = [("logical_reasoning", "reasoning")]
            return needed if free else [("logical_consistency", "consistency"), *needed]
        needed = [("reasoning",), ("plausibility",)]
        return needed if free else [("consistency",), *needed]
    return []


def protocol_gaps(
    name: StatisticsName,
    items: Sequence[tuple[str, Mapping[str, Any]]],
    gives: Callable[[str], set[str]],
    names: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Per category, the dimensions the statistics need that the judge gives none of
    (``gives(category)``: the score and metric names it produces for that category; ``items``:
    each item's category and benchmark fields). Empty: the statistics can be computed."""
    names = names or {}
    gaps: dict[str, list[str]] = {}
    for category, extra in items:
        have = gives(category)
        for choices in required_dimensions(name, category, extra):
            if not any(names.get(c, c) in have for c in choices):
                missing = gaps.setdefault(category, [])
                if choices[0] not in missing:
                    missing.append(choices[0])
    return gaps


def describe_gaps(name: StatisticsName, protocol: str | None, gaps: Mapping[str, list[str]]) -> str:
    """One sentence: which dimensions the judge protocol cannot give, and what to run instead."""
    by_missing: dict[tuple[str, ...], list[str]] = {}
    for category, missing in gaps.items():
        by_missing.setdefault(tuple(missing), []).append(category)
    parts = [
        f"no {', '.join(missing)} for {', '.join(sorted(categories))}"
        for missing, categories in by_missing.items()
    ]
    who = f"judge protocol {protocol!r}" if protocol else "run's judge protocol"
    return (
        f"the {who} cannot produce {BENCHMARK_NAMES[name]}'s official statistics ("
        + "; ".join(parts)
        + f"): those dimensions are left out of the tables; judge with --protocol "
        f"{OFFICIAL_PROTOCOLS[name]} (every category in one run)"
    )


def _absent_notes(
    name: StatisticsName, items: Sequence[JudgedItem], names: Mapping[str, str]
) -> list[str]:
    """A note where the run's answers lack (not: left unscored) a dimension the tables need."""
    present: dict[str, set[str]] = {}
    for item in items:
        present.setdefault(item.category, set()).update(item.metrics)
    gaps = protocol_gaps(
        name,
        [(i.category, i.extra) for i in items],
        lambda category: present.get(category, set()),
        names,
    )
    return [describe_gaps(name, None, gaps)] if gaps else []


STATISTICS: dict[StatisticsName, Callable[..., OfficialStatistics]] = {
    "imgedit": imgedit_statistics,
    "kris": kris_statistics,
    "rise": rise_statistics,
}


def official_statistics(
    name: StatisticsName,
    items: Sequence[JudgedItem],
    names: Mapping[str, str] | None = None,
) -> OfficialStatistics:
    """The benchmark's tables over the judged items, with notes where the judge's answers lack
    a dimension the tables need (a protocol that is not the benchmark's official one)."""
    stats = STATISTICS[name](items, names)
    notes = _absent_notes(name, items, names or {})
    return stats.model_copy(update={"notes": [*notes, *stats.notes]}) if notes else stats
