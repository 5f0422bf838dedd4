"""What judging a report's items cost: device time per item, items per second, tokens.

- Device time: the judge service says, for every item, how long the batch it was in ran
  (``timings.inference_s``) and how many items that batch carried (``timings.batch_items``);
  their quotient is the item's share of the judge's GPU (or CPU) time. Summed and averaged over
  the items the report uses.
- Items per second: items scored per second of score-phase wall time, over every invocation
  that scored for this judge (provenance.json: ``invocations[].score_wall_s`` for the run's own
  judge, ``rescores[].score_wall_s`` for a rescore's).
- Tokens: what an OpenAI-compatible judge reported (summary's ``judge_usage``), per item.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.judges import JudgeId
from orchestrator.provenance import PhaseCountsRecord, Provenance
from orchestrator.records import JudgeCost, JudgeUsage, ResultRow, ScoreRecord


def _phase_walls(provenance: Provenance, judge: JudgeId | None) -> tuple[int, float]:
    """(items scored, seconds) over the score phases that worked for this judge."""
    phases: list[tuple[float | None, PhaseCountsRecord | None]]
    if judge is None:
        phases = [(i.score_wall_s, i.score) for i in provenance.invocations]
    else:
        phases = [
            (r.score_wall_s, r.counts)
            for r in provenance.rescores
            if r.judge is not None and r.judge.label == judge.label
        ]
    items, seconds = 0, 0.0
    for wall, counts in phases:
        if wall is not None and counts is not None and counts.ok > 0:
            items += counts.ok
            seconds += wall
    return items, seconds


def judge_cost(
    rows: Sequence[ResultRow],
    records: Sequence[ScoreRecord],
    usage: JudgeUsage | None,
    provenance: Provenance,
    judge: JudgeId | None = None,
) -> JudgeCost:
    used = {r.score_job_id for r in rows if r.score_status == "ok" and r.score_job_id}
    shares: dict[str, float] = {}  # by job: a job answered twice is counted once
    for record in records:
        if record.ok and record.job_id in used and record.score is not None:
            timings = record.score.timings
            if timings.batch_items:
                shares[record.job_id] = timings.inference_s / timings.batch_items
    total = sum(shares.values())
    items = len(used)
    done, wall = _phase_walls(provenance, judge)
    tokens = usage.total_tokens if usage is not None else None
    return JudgeCost(
        items=items,
        device_s_per_item=round(total / len(shares), 6) if shares else None,
        device_s_total=round(total, 3) if shares else None,
        items_with_timings=len(shares),
        items_per_s=round(done / wall, 4) if wall > 0 else None,
        score_wall_s=round(wall, 3) if wall > 0 else None,
        tokens_total=tokens,
        tokens_per_item=round(tokens / items, 1) if tokens is not None and items else None,
    )


def cost_line(cost: JudgeCost | None) -> str | None:
    """One line for the terminal and the page: 'judge cost: 0.123 device-s/item, ...'."""
    if cost is None or cost.items == 0:
        return None
    parts = []
    if cost.device_s_per_item is not None:
        parts.append(
            f"{cost.device_s_per_item:.3f} device-s per item ({cost.device_s_total:.1f} s for "
            f"{cost.items_with_timings} items)"
        )
    if cost.items_per_s is not None:
        parts.append(f"{cost.items_per_s:.2f} items/s over {cost.score_wall_s:.1f} s of scoring")
    if cost.tokens_total is not None:
        parts.append(f"{cost.tokens_total} tokens ({cost.tokens_per_item:.0f} per item)")
    return "judge cost: " + ("; ".join(parts) if parts else "not reported")
