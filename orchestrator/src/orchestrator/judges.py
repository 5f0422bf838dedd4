"""Which judges scored a run folder, and choosing one by name.

A run's own scores live in scores.jsonl; ``editbench rescore`` puts another judge's (or another
protocol's) beside them in rescores.jsonl. Every score record names its judge: the model (id and
revision), the protocol, its hash and the scoring mode. Those four fields are a judge's identity
here (``JudgeId``); report, compare, agreement and leaderboard choose one with ``--judge NAME``,
where NAME is any of: the model id (``tiny-moe``), ``id@revision``, the protocol name, or
``MODEL:PROTOCOL[:MODE]`` when one of those alone is ambiguous. Without ``--judge``, the run's own
scores (scores.jsonl) are used, as before rescoring existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.records import ScoreRecord
from orchestrator.store import RunStore


class JudgeNotFound(ValueError):
    """--judge names no judge of the run, or several: the message lists the run's judges."""


@dataclass(frozen=True, slots=True)
class JudgeId:
    model: str | None  # id@revision, as records show models
    protocol: str
    protocol_hash: str | None
    mode: str

    @property
    def model_id(self) -> str | None:
        return None if self.model is None else self.model.split("@", 1)[0]

    @property
    def label(self) -> str:
        return f"{self.model_id or '?'}:{self.protocol}:{self.mode}"

    @property
    def slug(self) -> str:
        """A file-name-safe name (report-<slug>.html)."""
        short = (self.model_id or "judge").rsplit("/", 1)[-1]
        text = f"{short}-{self.protocol}-{self.mode}"
        if self.protocol_hash:
            text += "-" + self.protocol_hash.rsplit(":", 1)[-1][:8]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text)

    def names(self) -> set[str]:
        """Every name --judge may give for this judge."""
        found = {self.label, self.slug, self.protocol, f"{self.protocol}:{self.mode}"}
        if self.model:
            found.add(self.model)
        if self.model_id:
            short = self.model_id.rsplit("/", 1)[-1]
            for model in {self.model_id, short}:
                found |= {model, f"{model}:{self.protocol}", f"{model}:{self.protocol}:{self.mode}"}
        return found

    def matches(self, record: ScoreRecord) -> bool:
        """Whether a score record is this judge's. A failed record from before records named
        their judge (no model, no hash) counts for the judge of its protocol and mode."""
        if (record.protocol, record.mode) != (self.protocol, self.mode):
            return False
        if record.model is None and record.protocol_hash is None and not record.ok:
            return True
        return judge_of(record) == self

    def describe(self) -> dict[str, str | None]:
        return {
            "label": self.label,
            "model": self.model,
            "protocol": self.protocol,
            "protocol_hash": self.protocol_hash,
            "mode": self.mode,
            "slug": self.slug,
        }


def judge_of(record: ScoreRecord) -> JudgeId:
    model = None
    if record.model is not None:
        model = record.model.id + (f"@{record.model.revision}" if record.model.revision else "")
    return JudgeId(model, record.protocol, record.protocol_hash, record.mode)


def judges_in(records: Iterable[ScoreRecord]) -> list[JudgeId]:
    """The judges of the ok records, in order of first appearance."""
    seen: dict[JudgeId, None] = {}
    for record in records:
        if record.ok:
            seen.setdefault(judge_of(record), None)
    return list(seen)


def all_scores(store: RunStore) -> list[ScoreRecord]:
    """The run's own score records, then every rescore's."""
    return [*store.scores.read(), *store.rescores.read()]


def run_judges(store: RunStore) -> list[JudgeId]:
    """Every judge that scored the run: the run's own first, then rescores, in order."""
    return judges_in(all_scores(store))


def select_judge(judges: Sequence[JudgeId], name: str) -> JudgeId:
    """The one judge ``name`` names, else JudgeNotFound listing the run's judges."""
    hits = [j for j in judges if name in j.names()]
    listed = ", ".join(j.label for j in judges) or "none (nothing scored yet)"
    if not hits:
        raise JudgeNotFound(f"no judge {name!r} scored this run; its judges: {listed}")
    if len(hits) > 1:
        raise JudgeNotFound(
            f"--judge {name!r} names {len(hits)} judges ({', '.join(j.label for j in hits)}); "
            "give MODEL:PROTOCOL:MODE"
        )
    return hits[0]


def scores_of(store: RunStore, judge: JudgeId | None) -> list[ScoreRecord]:
    """The score records one judge wrote (None: the run's own scores.jsonl, as it is)."""
    if judge is None:
        return store.scores.read()
    return [r for r in all_scores(store) if judge.matches(r)]
