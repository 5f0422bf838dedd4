"""One row per planned item: its edit and its score, joined from the run folder's logs.

For each item the latest successful record wins, else the latest failure. A score is used only if
it judged the image the item's edit record points to (a re-edited item's old score is stale).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

from orchestrator.judges import JudgeId, scores_of
from orchestrator.metrics import MetricSet, bound, metric_set, record_values
from orchestrator.records import (
    EditRecord,
    JobRecord,
    LeftOutValue,
    LogIntegrity,
    PlanRow,
    ResultRow,
    ScoreRecord,
    model_name,
)
from orchestrator.store import RunStore
from orchestrator.thumbs import INPUT_ROLES

J = TypeVar("J", bound=JobRecord)


def _pick(records: list[J]) -> J | None:
    ok = [r for r in records if r.ok]
    if ok:
        return ok[-1]
    return records[-1] if records else None


def _group(records: Iterable[J]) -> dict[str, list[J]]:
    grouped: dict[str, list[J]] = {}
    for record in records:
        grouped.setdefault(record.item_id, []).append(record)
    return grouped


@dataclass(frozen=True, slots=True)
class RunRecords:
    """A run folder's logs, read (and validated) once."""

    plan: list[PlanRow]
    edits: list[EditRecord]
    scores: list[ScoreRecord]
    skipped: dict[str, int]
    metrics: MetricSet  # the metrics of the protocol these scores were made with

    @classmethod
    def read(cls, store: RunStore, judge: JudgeId | None = None) -> RunRecords:
        """The logs; ``judge``: only that judge's score records (None: the run's own)."""
        edits = store.edits.read()
        scores = scores_of(store, judge)
        skipped = store.scores.skipped + (store.rescores.skipped if judge is not None else 0)
        return cls(
            plan=store.read_plan(),
            edits=edits,
            scores=scores,
            skipped={"edit": store.edits.skipped, "score": skipped},
            metrics=scores_metric_set(store, scores),
        )


def scores_metric_set(store: RunStore, scores: Sequence[ScoreRecord]) -> MetricSet:
    """The metric set of the protocol that made ``scores`` (orchestrator.metrics)."""
    provenance = store.read_provenance()
    protocols = [s.protocol for s in scores]
    seen = [list(s.score.metrics) for s in scores if s.score is not None and s.score.metrics]
    seen += [list(s.metrics) for s in scores if s.metrics]
    return metric_set(provenance, protocols[-1] if protocols else None, seen)


def _log_integrity(records: Sequence[JobRecord], skipped: int) -> LogIntegrity:
    ok = [r.job_id for r in records if r.ok]
    return LogIntegrity(
        records=len(records),
        jobs=len({r.job_id for r in records}),
        duplicate_ok_records=len(ok) - len(set(ok)),
        skipped_lines=skipped,
    )


def integrity(records: RunRecords) -> dict[str, LogIntegrity]:
    """What the logs hold: records, ok records beyond one per job (must be 0), lines left out."""
    return {
        "edit": _log_integrity(records.edits, records.skipped["edit"]),
        "score": _log_integrity(records.scores, records.skipped["score"]),
    }


def _edit_fields(edit: EditRecord | None) -> dict[str, object]:
    if edit is None:
        return {"edit_status": "pending"}
    timings = edit.response.timings if edit.response else None
    return {
        "edit_status": edit.status,
        "edit_job_id": edit.job_id,
        "edit_error": None if edit.ok else edit.error,
        "edit_retryable": edit.retryable,
        "edit_attempts": edit.attempts,
        "edit_retries": edit.retries,
        "edited_image": edit.image if edit.ok else None,
        "seed": edit.seed,
        "edit_s": timings.edit_s if timings else None,
        "editor_model": model_name(edit.model),
        "editor_meaningful": edit.model.meaningful if edit.model else None,
    }


def _score_fields(score: ScoreRecord | None, metrics: MetricSet) -> dict[str, object]:
    if score is None:
        return {"score_status": "pending", "metrics": dict.fromkeys(metrics.names)}
    result = score.score if score.ok else None
    values: dict[str, float | None] = dict.fromkeys(metrics.names)
    left_out: list[LeftOutValue] = []
    if result is not None:
        legacy = {"sc": score.sc, "pq": score.pq, "overall": score.overall}
        sources = record_values(score.metrics, result, legacy)
        values, dropped = bound(sources, metrics.names, metrics.scale)
        left_out = [LeftOutValue(item_id=score.item_id, **asdict(d)) for d in dropped]
        if result.metrics:  # a metric the item's questions cannot make is absent, not unscored
            values = {k: v for k, v in values.items() if k in result.metrics or k in score.metrics}
    return {
        "score_status": score.status,
        "score_job_id": score.job_id,
        "score_error": None if score.ok else score.error,
        "score_retryable": score.retryable,
        "score_attempts": score.attempts,
        "score_retries": score.retries,
        "scored": bool(result and result.scored),
        "metrics": values,
        "left_out": left_out,
        "questions": result.questions if result else None,
        "protocol": score.protocol,
        "protocol_hash": score.protocol_hash,
        "deterministic": score.deterministic,
        "mode": score.mode,
        "judge_model": model_name(score.model),
        "judge_meaningful": score.model.meaningful if score.model else None,
    }


def build_rows(store: RunStore, records: RunRecords | None = None) -> list[ResultRow]:
    """The joined per-item view of a run folder (what results.jsonl holds)."""
    records = records or RunRecords.read(store)
    edits = _group(records.edits)
    scores = _group(records.scores)
    rows = []
    for item in records.plan:
        edit = _pick(edits.get(item.id, []))
        edited_sha = edit.image_sha256 if edit and edit.ok else None
        score = _pick(
            [
                s
                for s in scores.get(item.id, [])
                if edited_sha is None or s.edited_sha256 == edited_sha
            ]
        )
        fields = {**_edit_fields(edit), **_score_fields(score, records.metrics)}
        if fields.get("edited_image") is None and score is not None:
            fields["edited_image"] = score.edited_image
        rows.append(
            ResultRow.model_validate(
                {
                    "item_id": item.id,
                    "category": item.category,
                    "language": item.language,
                    "instruction": item.instruction,
                    "hints": item.hints,
                    "source": item.source,
                    "extra": item.extra,
                    "source_thumb": store.shown_thumb_relpath("source", item.id),
                    "more_thumbs": {
                        role: store.thumb_relpath(role, item.id)
                        for role in (*INPUT_ROLES, "reference")
                        if store.has_file(store.thumb_relpath(role, item.id))
                    },
                    "edited_thumb": store.shown_thumb_relpath("edited", item.id),
                    **fields,
                }
            )
        )
    return rows
