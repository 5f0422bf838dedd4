"""``editbench agreement``: how far two judges (or two protocols) agree on the same edits.

On the items both judges scored (same item, both scored), per category and overall:
Spearman's rho and Kendall's tau-b of the item scores, pairwise preference agreement (of the
item pairs both judges order strictly, the share they order alike), the mean offset (judge B -
judge A) and its spread (the standard deviation of the per-item offsets). Correlations,
agreement and spread get a seeded BCa bootstrap 95% interval, the mean offset a Student-t
interval (docs/statistics.md says why); every one carries its n. Categories are listed from the
least agreeing (lowest tau-b) up. Writes agreement.json and agreement.html.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import stats
from orchestrator.benchmarks.reporting import value_of
from orchestrator.judges import JudgeId, JudgeNotFound, run_judges, select_judge
from orchestrator.records import ResultRow
from orchestrator.report.breakdown import item_metrics, run_reporting
from orchestrator.report.results import RunRecords, build_rows
from orchestrator.store import RunStore, atomic_write_text

MIN_BOOTSTRAP_N = 5
CORRELATIONS = ("spearman", "kendall_tau_b", "pairwise_agreement", "offset_spread")

DEFINITIONS = {
    "n": "items both judges scored (the pairs every statistic of the row rests on)",
    "spearman": "Spearman's rho of the two judges' item scores (average ranks for ties)",
    "kendall_tau_b": "Kendall's tau-b of the item scores (ties counted as tau-b does)",
    "pairwise_agreement": "of the item pairs both judges order strictly, the share they order "
    "the same way (which edit of two is better); pairs either judge ties are counted apart",
    "mean_offset": "mean over items of (judge B - judge A), Student-t 95% interval",
    "offset_spread": "standard deviation over items of (judge B - judge A)",
    "intervals": "BCa bootstrap 95% intervals (items resampled with replacement, seeded) for "
    "the correlations, agreement and spread; none below 5 items (too few distinct resamples) "
    "or when a judge's scores are all equal",
}


class AgreementError(ValueError):
    """A run that cannot give an agreement report, with a message that says why."""


def _scores(
    rows: Sequence[ResultRow], metric: str, run: Path
) -> dict[str, tuple[str, float | None]]:
    reporting = run_reporting(run)
    out: dict[str, tuple[str, float | None]] = {}
    for row in rows:
        values = item_metrics(row, reporting)
        group = value_of(row, reporting.row_key)
        out[row.item_id] = (
            "(none)" if group in (None, "") else str(group),
            None if values is None else values.get(metric),
        )
    return out


def _statistics(pairs: Sequence[tuple[float, float]]) -> Mapping[str, float | None]:
    x = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    counts = stats.pair_counts(x, y)
    diffs = [b - a for a, b in pairs]
    return {
        "spearman": stats.spearman(x, y),
        "kendall_tau_b": counts.tau_b,
        "pairwise_agreement": counts.agreement,
        "offset_spread": statistics.stdev(diffs) if len(diffs) > 1 else None,
    }


def agreement_of(
    pairs: Sequence[tuple[float, float]], *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Every statistic of one group of (judge A, judge B) item scores, with intervals."""
    counts = stats.pair_counts([p[0] for p in pairs], [p[1] for p in pairs])
    intervals = stats.bca_intervals(
        pairs, _statistics, CORRELATIONS, resamples=resamples, seed=seed
    )
    if len(pairs) < MIN_BOOTSTRAP_N:
        # Three items have 10 distinct resamples, most of them with ties: such an "interval"
        # (often [-1, -1]) would claim a certainty the data do not have.
        intervals = {
            k: stats.Interval(v.estimate, None, None, v.n, "bca") for k, v in intervals.items()
        }
    offset = stats.mean_interval([b - a for a, b in pairs])
    mean_a = statistics.fmean(p[0] for p in pairs) if pairs else None
    mean_b = statistics.fmean(p[1] for p in pairs) if pairs else None
    return {
        "n": len(pairs),
        "mean_a": None if mean_a is None else round(mean_a, 6),
        "mean_b": None if mean_b is None else round(mean_b, 6),
        **{name: intervals[name].as_dict() for name in CORRELATIONS},
        "mean_offset": offset.as_dict(),
        "pairs": {
            "all": counts.pairs,
            "agree": counts.concordant,
            "disagree": counts.discordant,
            "tied_by_one": counts.tied_x + counts.tied_y - 2 * counts.tied_both,
            "tied_by_both": counts.tied_both,
        },
    }


def _judges(store: RunStore, names: Sequence[str] | None) -> tuple[JudgeId, JudgeId]:
    judges = run_judges(store)
    if names:
        a, b = (select_judge(judges, name) for name in names)
    else:
        if len(judges) < 2:
            listed = ", ".join(j.label for j in judges) or "none"
            raise AgreementError(
                f"{store.root} was scored by {len(judges)} judge(s) ({listed}): score it again "
                "with `editbench rescore RUN --reward-url URL` first"
            )
        a, b = judges[0], judges[1]
    if a == b:
        raise AgreementError(f"--judges names the same judge twice ({a.label})")
    return a, b


def run_agreement(
    run: Path,
    *,
    judges: Sequence[str] | None = None,
    metric: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """agreement.json's body for two judges of one run (default: its first two); ``metric``:
    one of judge A's protocol metrics (None: its headline)."""
    store = RunStore(run)
    if not store.exists():
        raise AgreementError(f"{run} is not a run folder (no run.json)")
    try:
        judge_a, judge_b = _judges(store, judges)
    except JudgeNotFound as exc:
        raise AgreementError(str(exc)) from None
    records_a = RunRecords.read(store, judge_a)
    try:
        metric = records_a.metrics.check(metric)
    except ValueError as exc:
        raise AgreementError(f"--metric: {exc}") from None
    rows_a = build_rows(store, records_a)
    rows_b = build_rows(store, RunRecords.read(store, judge_b))
    scores_a, scores_b = _scores(rows_a, metric, run), _scores(rows_b, metric, run)
    groups: dict[str, list[tuple[float, float]]] = {}
    everything: list[tuple[float, float]] = []
    unpaired = {"scored_by_a_only": 0, "scored_by_b_only": 0, "scored_by_neither": 0}
    for item_id, (group, a) in scores_a.items():
        b = scores_b.get(item_id, (group, None))[1]
        if a is not None and b is not None:
            groups.setdefault(group, []).append((a, b))
            everything.append((a, b))
        elif a is not None:
            unpaired["scored_by_a_only"] += 1
        elif b is not None:
            unpaired["scored_by_b_only"] += 1
        else:
            unpaired["scored_by_neither"] += 1
    if not everything:
        raise AgreementError(
            f"no item of {run} was scored by both {judge_a.label} and {judge_b.label}"
        )
    categories = {
        name: agreement_of(groups[name], resamples=resamples, seed=seed) for name in sorted(groups)
    }
    order = sorted(
        categories,
        key=lambda c: (
            categories[c]["kendall_tau_b"]["estimate"] is None,
            categories[c]["kendall_tau_b"]["estimate"] or 0.0,
        ),
    )
    reporting = run_reporting(run)
    provenance = store.read_provenance()
    return {
        "run": {
            "label": run.resolve().name,
            "path": str(run),
            "benchmark": provenance.benchmark_name(),
        },
        "judges": {"a": judge_a.describe(), "b": judge_b.describe()},
        "metric": metric,
        "group_by": reporting.label(reporting.row_key),
        "bootstrap": {"resamples": resamples, "seed": seed, "method": "BCa"},
        "overall": agreement_of(everything, resamples=resamples, seed=seed),
        "categories": categories,
        "disagree_most": order,
        "unpaired": unpaired,
        "points": [
            {"item": item_id, "group": group, "a": a, "b": scores_b[item_id][1]}
            for item_id, (group, a) in scores_a.items()
            if a is not None and scores_b.get(item_id, (group, None))[1] is not None
        ],
        "definitions": DEFINITIONS,
    }


def write_agreement(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """agreement.json and agreement.html in ``out``, each written atomically."""
    from orchestrator.report.agreement_view import render_agreement_html

    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "agreement.json", out / "agreement.html"
    atomic_write_text(
        json_path, json.dumps(result, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    )
    atomic_write_text(html_path, render_agreement_html(result))
    return json_path, html_path
