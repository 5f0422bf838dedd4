"""The run's metrics: which, in what order, with what labels, on what scale, and their values.

The judge protocol owns its metrics (reward_service computes every one of them; nothing here
recomputes a rule). This module is the one place the orchestrator learns them:

- ``MetricSet`` names the metrics, their labels, the headline and the scale, from the protocol's
  ``ProtocolInfo`` (recorded in provenance.json when the run was scored, or for a rescore in its
  entry there). A run scored before protocols declared metrics reads as VIEScore's sc, pq,
  overall on 0..10.
- ``record_values`` reads one score record's metric values: the answer's ``metrics`` map, or the
  ``sc``/``pq``/``overall`` fields older records carry.
- ``bound`` keeps a value only where it is a finite number on the protocol's scale: a damaged or
  hand-edited record (NaN, inf, -5 on 0..10) is left out of every mean and reported, never
  averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from orchestrator.provenance import Provenance
from shared_schemas import DEFAULT_SCALE, ItemScore, MetricInfo, ProtocolInfo, ScoreScale

LEGACY = (
    MetricInfo(name="sc", label="SC", rule="min(semantic consistency questions)"),
    MetricInfo(name="pq", label="PQ", rule="min(perceptual quality questions)"),
    MetricInfo(name="overall", label="Overall", rule="as the judge returned it"),
)


class MetricSet(BaseModel):
    """What a run reports per item, in order: from its judge protocol."""

    model_config = ConfigDict(frozen=True)

    protocol: str | None = None
    metrics: list[MetricInfo]
    headline: str
    scale: ScoreScale = DEFAULT_SCALE

    @classmethod
    def legacy(cls, protocol: str | None = None) -> MetricSet:
        """A run scored before protocols declared metrics: sc, pq, overall on 0..10."""
        return cls(protocol=protocol, metrics=list(LEGACY), headline="overall")

    @classmethod
    def from_protocol(cls, info: ProtocolInfo) -> MetricSet:
        if not info.metrics:
            return cls.legacy(info.name)
        headline = info.headline or info.metrics[-1].name
        return cls(protocol=info.name, metrics=info.metrics, headline=headline, scale=info.scale)

    @classmethod
    def of_names(cls, names: Sequence[str], protocol: str | None = None) -> MetricSet:
        """Only the names are known (the protocol's description was not recorded)."""
        if not names:
            return cls.legacy(protocol)
        headline = "overall" if "overall" in names else names[-1]
        metrics = [MetricInfo(name=n, label=n, rule="as the judge returned it") for n in names]
        return cls(protocol=protocol, metrics=metrics, headline=headline)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def label(self, name: str) -> str:
        return next((m.label for m in self.metrics if m.name == name), name)

    def describe(self) -> dict[str, str]:
        """One line per metric, for summary.json's definitions."""
        scale = f"{self.scale.min}-{self.scale.max}"
        lines = {m.name: f"{m.label}: {m.rule}, {scale}" for m in self.metrics}
        lines[self.headline] += " (the headline)"
        return lines

    def check(self, name: str | None) -> str:
        """``name`` if it is one of the metrics (None: the headline); else ValueError."""
        if name is None:
            return self.headline
        if name not in self.names:
            raise ValueError(f"unknown metric {name!r}; this run has: {', '.join(self.names)}")
        return name


def metric_set(
    provenance: Provenance, protocol: str | None, seen: Iterable[Sequence[str]] = ()
) -> MetricSet:
    """The metric set of a protocol a run's records name: its recorded description, else the
    metric names its answers carried (``seen``, in order), else VIEScore's legacy three."""
    for info in provenance.protocol_infos():
        if info.name == protocol and info.metrics:
            return MetricSet.from_protocol(info)
    names: list[str] = []
    for keys in seen:
        names += [k for k in keys if k not in names]
    return MetricSet.of_names(names, protocol) if names else MetricSet.legacy(protocol)


def answer_values(score: ItemScore) -> dict[str, float | None]:
    """The metric values of a judge's answer: its ``metrics``, or (a service older than metrics)
    its sc, pq and overall."""
    if score.metrics:
        return dict(score.metrics)
    return {"sc": score.sc, "pq": score.pq, "overall": score.overall}


def record_values(
    record_metrics: Mapping[str, float | None],
    score: ItemScore | None,
    legacy: Mapping[str, float | None],
) -> list[Mapping[str, float | None]]:
    """Where a score record holds metric values, most authoritative first: its ``metrics``, the
    stored answer's ``metrics``, and the sc/pq/overall that older records and answers carry."""
    sources: list[Mapping[str, float | None]] = [record_metrics]
    if score is not None:
        sources.append(score.metrics)
        sources.append({"sc": score.sc, "pq": score.pq, "overall": score.overall})
    sources.append(legacy)
    return [s for s in sources if s]


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A metric value a record held that no mean may use, and why."""

    metric: str
    value: str
    reason: str


def _damage(value: object, scale: ScoreScale) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a number"
    if not math.isfinite(value):
        return "not a finite number"
    if not scale.contains(value):
        return f"outside the protocol's scale {scale.min}..{scale.max}"
    return None


def bound(
    sources: Sequence[Mapping[str, float | None]], names: Sequence[str], scale: ScoreScale
) -> tuple[dict[str, float | None], list[LeftOut]]:
    """Each metric's value in ``names``' order: the first source that has one, kept only if
    every source that has one holds a finite number on the scale (a record's own fields and the
    answer it stores must both be sound); else None, and what was dropped with the reason (a
    damaged record is reported, never averaged in)."""
    kept: dict[str, float | None] = {}
    dropped: list[LeftOut] = []
    for name in names:
        found = [source[name] for source in sources if source.get(name) is not None]
        kept[name] = None
        damaged = [(v, why) for v in found if (why := _damage(v, scale)) is not None]
        if damaged:
            value, why = damaged[0]
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            dropped.append(LeftOut(name, shown, why))
        elif found:
            kept[name] = float(found[0])  # type: ignore[arg-type]
    return kept, dropped
