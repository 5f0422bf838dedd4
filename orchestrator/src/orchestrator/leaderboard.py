"""``editbench leaderboard``: runs of different editors on one benchmark, ranked, with honest
uncertainty.

Every run is read under one judge (``--judge``, default each run's own), in one declared table of
the benchmark (default its first: all items, or the first split value; ``--table`` picks
another). Per run: the table's headline of the metric (macro: the unweighted mean of the row
means, micro: the mean over items, as the benchmark declares) with its 95% t interval
(Welch-Satterthwaite for macro) and n, and each row's (category's) mean with its n. Runs are
ranked by the headline. Between adjacent runs, the paired difference on the items both scored
(same item, same protocol hash) with its 95% interval; per run a rank interval from paired
t-tests against every other run, Holm-adjusted (orchestrator.stats.rank_intervals). With
``--compare-judge``, the same runs under a second judge, and Kendall's tau-b between the two
rankings (over runs) with a BCa interval from resampling the items.

Runs of different benchmarks, or judged by different models or protocols, are refused unless
the caller allows it, naming the difference.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import stats
from orchestrator.benchmarks.reporting import Reporting
from orchestrator.benchmarks.statistics import JudgedItem, official_statistics
from orchestrator.compare import LoadedRun, check_judges, load_run
from orchestrator.judges import JudgeNotFound, run_judges, select_judge
from orchestrator.report.breakdown import item_metrics, partitions
from orchestrator.report.tables import cell
from orchestrator.store import RunStore, atomic_write_text


class LeaderboardError(ValueError):
    """Runs that cannot share a leaderboard, with a message that says why."""


@dataclass(slots=True)
class Entry:
    """One run in the chosen table: item values by row (category), keyed by item id."""

    run: LoadedRun
    rows: dict[str, dict[str, float]]  # row name -> item id -> value
    hashes: dict[str, str | None]  # item id -> protocol hash

    def items(self) -> dict[str, float]:
        return {i: v for values in self.rows.values() for i, v in values.items()}


def _entry(run: LoadedRun, reporting: Reporting, metric: str, table: str | None) -> Entry:
    parts = [p for p in partitions(run.rows, reporting) if p.subset is None or table]
    if not parts:
        return Entry(run, {}, {})
    chosen = parts[0] if table is None else next((p for p in parts if p.title == table), None)
    if chosen is None:
        titles = ", ".join(p.title for p in partitions(run.rows, reporting))
        raise LeaderboardError(f"{run.label} has no table {table!r}; its tables: {titles}")
    rows: dict[str, dict[str, float]] = {}
    hashes: dict[str, str | None] = {}
    for name, members in chosen.rows.items():
        rows[name] = {}
        for row in members:
            values = item_metrics(row, reporting)
            value = None if values is None else values.get(metric)
            if value is not None:
                rows[name][row.item_id] = value
                hashes[row.item_id] = row.protocol_hash
    return Entry(run, rows, hashes)


def _headline(rows: dict[str, dict[str, float]], macro: bool) -> stats.Interval:
    if macro:
        return stats.macro_mean_interval([list(v.values()) for v in rows.values()])
    return stats.mean_interval([x for v in rows.values() for x in v.values()])


def _paired(a: Entry, b: Entry, macro: bool) -> dict[str, Any]:
    """b - a on the items both scored under one protocol hash, by row for a macro headline."""
    strata: list[list[float]] = []
    for name, values in a.rows.items():
        other = b.rows.get(name, {})
        diffs = [
            other[i] - v
            for i, v in values.items()
            if i in other and a.hashes.get(i) == b.hashes.get(i)
        ]
        if diffs:
            strata.append(diffs)
    flat = [d for s in strata for d in s]
    interval = stats.macro_mean_interval(strata) if macro else stats.mean_interval(flat)
    return {**interval.as_dict(), "excludes_zero": interval.excludes(0.0), "pairs": len(flat)}


def _check(runs: Sequence[LoadedRun], allow_benchmarks: bool, allow_judges: bool) -> list[str]:
    problems: list[str] = []
    described = [run.describe() for run in runs]
    for key, what in (("benchmark", "benchmarks"), ("benchmark_fingerprint", "benchmark files")):
        seen = {d.label: getattr(d, key) for d in described}
        if len(set(seen.values())) > 1:
            line = f"different {what}: " + "; ".join(f"{k}: {v}" for k, v in seen.items())
            if not allow_benchmarks:
                raise LeaderboardError(
                    f"these runs are not on one benchmark ({line}); "
                    "--allow-different-benchmarks ranks them anyway"
                )
            problems.append(line)
    judged = check_judges(runs)
    if judged and not allow_judges:
        raise LeaderboardError(
            "these runs were judged differently, so their scores are not on one scale "
            "(--allow-different-judges ranks them anyway):\n  " + "\n  ".join(judged)
        )
    return problems + judged


def _load(paths: Sequence[Path], judge: str | None) -> list[LoadedRun]:
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path, judge=judge))
        except JudgeNotFound as exc:
            raise LeaderboardError(f"{path}: {exc}") from None
    labels = [run.label for run in runs]
    for index, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label}#{index + 1}"
    return runs


def _report_link(run: LoadedRun, out: Path, judge: str | None) -> str:
    """The run's report under the chosen judge, relative to the leaderboard's folder."""
    name = "report.html"
    if judge is not None:
        name = f"report-{select_judge(run_judges(RunStore(run.path)), judge).slug}.html"
        if not (run.path / name).is_file():  # not written yet: the link must lead somewhere
            from orchestrator.runner import rerender_report

            rerender_report(run.path, judge=judge)
    return Path(os.path.relpath(run.path.resolve() / name, out.resolve())).as_posix()


def _official(
    run: LoadedRun, reporting: Reporting, resamples: int, seed: int
) -> dict[str, Any] | None:
    """The benchmark's own headline (benchmarks/statistics.py: ImgEdit, KRIS, RISE), computed
    as its authors' script does, with a BCa interval from resampling the judged items; None when
    the benchmark declares no official statistics."""
    name = reporting.statistics
    if name is None:
        return None
    items = [
        JudgedItem(item_id=r.item_id, category=r.category, extra=r.extra, metrics=r.metrics)
        for r in run.rows
        if r.score_status == "ok"  # unscored answers count as the script counts them
    ]

    def headline(chosen: Sequence[JudgedItem]) -> float | None:
        return official_statistics(name, chosen, reporting.metric_names).headline

    label = official_statistics(name, items, reporting.metric_names).headline_label
    interval = stats.bca_interval(items, headline, resamples=resamples, seed=seed)
    return {"label": label, "statistics": name, **interval.as_dict()}


def _ranking(
    entries: Sequence[Entry], macro: bool, officials: dict[str, dict[str, Any] | None]
) -> list[tuple[Entry, stats.Interval]]:
    """Best first: by the benchmark's official headline where it declares one, else by the
    declared table's headline."""
    scored = [(e, _headline(e.rows, macro)) for e in entries]

    def key(pair: tuple[Entry, stats.Interval]) -> tuple[bool, float]:
        official = officials.get(pair[0].run.label)
        value = official["estimate"] if official is not None else pair[1].estimate
        return value is None, -(value or 0.0)

    return sorted(scored, key=key)


def _tau_between_judges(
    first: Sequence[Entry], second: Sequence[Entry], macro: bool, resamples: int, seed: int
) -> dict[str, Any]:
    """Kendall tau-b between the runs' headlines under two judges, with a BCa interval from
    resampling the items every run scored under both judges."""
    shared = set.intersection(*(set(e.items()) for e in [*first, *second])) if first else set()
    row_of = {i: name for e in first for name, v in e.rows.items() for i in v}
    items = sorted(shared)

    def headlines(entries: Sequence[Entry], chosen: Sequence[str]) -> list[float]:
        out = []
        for e in entries:
            flat = e.items()
            if macro:
                by_row: dict[str, list[float]] = {}
                for i in chosen:
                    by_row.setdefault(row_of[i], []).append(flat[i])
                out.append(statistics.fmean(statistics.fmean(v) for v in by_row.values()))
            else:
                out.append(statistics.fmean(flat[i] for i in chosen))
        return out

    def tau(chosen: Sequence[str]) -> float | None:
        if not chosen:
            return None
        return stats.kendall_tau_b(headlines(first, chosen), headlines(second, chosen))

    headline_a = [_headline(e.rows, macro).estimate for e in first]
    headline_b = [_headline(e.rows, macro).estimate for e in second]
    both = [
        (a, b)
        for a, b in zip(headline_a, headline_b, strict=True)
        if a is not None and b is not None
    ]
    estimate = stats.kendall_tau_b([p[0] for p in both], [p[1] for p in both]) if both else None
    interval = stats.bca_interval(items, tau, resamples=resamples, seed=seed)
    return {
        "kendall_tau_b": estimate,
        "models": len(both),
        "interval_on_shared_items": interval.as_dict(),
        "spearman": stats.spearman([p[0] for p in both], [p[1] for p in both]) if both else None,
    }


def build_leaderboard(
    paths: Sequence[Path],
    *,
    out: Path,
    judge: str | None = None,
    compare_judge: str | None = None,
    metric: str | None = None,
    table: str | None = None,
    allow_different_benchmarks: bool = False,
    allow_different_judges: bool = False,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """leaderboard.json's body."""
    if len(paths) < 2:
        raise LeaderboardError("a leaderboard needs at least two run folders")
    runs = _load(paths, judge)
    try:
        metric = runs[0].metrics.check(metric)  # None: the protocol's headline
    except ValueError as exc:
        raise LeaderboardError(f"--metric: {exc}") from None
    warnings = _check(runs, allow_different_benchmarks, allow_different_judges)
    reporting = runs[0].reporting
    macro = reporting.headline == "macro"
    entries = [_entry(run, reporting, metric, table) for run in runs]
    officials = {run.label: _official(run, reporting, resamples, seed) for run in runs}
    ranked = _ranking(entries, macro, officials)
    order = [e.run.label for e, _ in ranked]
    row_of = {i: name for e in entries for name, values in e.rows.items() for i in values}

    def by_rows(a: Mapping[Any, float | None], b: Mapping[Any, float | None]) -> stats.TTest:
        """b - a per row on shared items; the Welch test of the mean of the row means."""
        strata: dict[str, list[float]] = {}
        for item, diff in stats.paired_differences(a, b).items():
            strata.setdefault(row_of[item], []).append(diff)
        return stats.macro_t_test(list(strata.values()))

    ranks = stats.rank_intervals(
        {e.run.label: e.items() for e in entries},
        order=order,
        alpha=1 - stats.LEVEL,
        test=by_rows if macro else stats.paired_t,
    )
    row_names = sorted({name for e in entries for name in e.rows})
    models = []
    for position, (entry, headline) in enumerate(ranked):
        below = ranked[position + 1][0] if position + 1 < len(ranked) else None
        rank = ranks[entry.run.label]
        models.append(
            {
                "rank": position + 1,
                "label": entry.run.label,
                "run": entry.run.describe().model_dump(mode="json"),
                "report": _report_link(entry.run, out, judge),
                "headline": headline.as_dict(),
                "official_headline": officials[entry.run.label],
                "rank_interval": [rank.low, rank.high],
                "significantly_better_than": rank.worse,
                "significantly_worse_than": rank.better,
                "rows": {
                    name: {
                        "n": len(entry.rows.get(name, {})),
                        "mean": None
                        if not entry.rows.get(name)
                        else round(statistics.fmean(entry.rows[name].values()), 6),
                    }
                    for name in row_names
                },
                "vs_next": None
                if below is None
                else {"next": below.run.label, **_paired(below, entry, macro)},
            }
        )
    official = next((o for o in officials.values() if o is not None), None)
    result: dict[str, Any] = {
        "ranked_by": f"{official['label']}, the benchmark's own headline ({official['statistics']})"
        if official is not None
        else f"{metric}, the declared table's headline",
        "metric": metric,
        "headline": "macro: unweighted mean of the row means"
        if macro
        else "micro: mean over scored items",
        "table": table or (partitions(runs[0].rows, reporting)[0].title if runs[0].rows else None),
        "row_label": reporting.label(reporting.row_key),
        "rows": row_names,
        "judge": judge,
        "benchmark": runs[0].describe().benchmark,
        "models": models,
        "intervals": {
            "headline": "95% Student-t interval of the mean (macro: Welch-Satterthwaite over "
            "the rows), n items",
            "official_headline": "95% BCa bootstrap interval of the benchmark's own headline "
            "(items resampled, seeded), n items",
            "vs_next": "95% interval of the paired difference (this run - the next) on the "
            "items both scored with the same protocol hash",
            "rank_interval": "[1 + runs significantly better, N - runs significantly worse]: "
            "paired tests on shared items of the headline's statistic (macro: Welch over the "
            "rows' mean differences; micro: paired t), Holm-adjusted over all pairs of runs",
        },
        "warnings": warnings,
    }
    if compare_judge is not None:
        second_runs = _load(paths, compare_judge)
        second = [_entry(run, second_runs[0].reporting, metric, table) for run in second_runs]
        second_officials = {
            run.label: _official(run, run.reporting, resamples, seed) for run in second_runs
        }
        second_ranked = _ranking(second, macro, second_officials)
        result["compare_judge"] = {
            "judge": compare_judge,
            "order": [e.run.label for e, _ in second_ranked],
            "headlines": {e.run.label: h.as_dict() for e, h in second_ranked},
            **_tau_between_judges(entries, second, macro, resamples, seed),
        }
    return result


def leaderboard_csv(result: dict[str, Any]) -> str:
    buffer = io.StringIO()
    # Every cell through `cell`: labels, editors and the benchmark's category names (the
    # column headers) come from files others write, and must not become spreadsheet formulas.
    writer = _TextCells(csv.writer(buffer, lineterminator="\n"))
    rows = result["rows"]
    writer.writerow(
        [
            "rank",
            "label",
            "editor",
            "headline",
            "ci_low",
            "ci_high",
            "n",
            "rank_low",
            "rank_high",
            "official_headline",
            "official_ci_low",
            "official_ci_high",
            "diff_vs_next",
            "diff_ci_low",
            "diff_ci_high",
            "diff_pairs",
            *[f"{r} mean" for r in rows],
            *[f"{r} n" for r in rows],
            "report",
        ]
    )
    for m in result["models"]:
        h, nxt, official = m["headline"], m["vs_next"] or {}, m["official_headline"] or {}
        writer.writerow(
            [
                m["rank"],
                m["label"],
                ";".join(m["run"]["editor"]),
                h["estimate"],
                h["low"],
                h["high"],
                h["n"],
                m["rank_interval"][0],
                m["rank_interval"][1],
                official.get("estimate"),
                official.get("low"),
                official.get("high"),
                nxt.get("estimate"),
                nxt.get("low"),
                nxt.get("high"),
                nxt.get("pairs"),
                *[m["rows"][r]["mean"] for r in rows],
                *[m["rows"][r]["n"] for r in rows],
                m["report"],
            ]
        )
    return buffer.getvalue()


class _TextCells:
    """A csv writer whose every cell is written as `report.tables.cell` makes it safe."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Sequence[Any]) -> None:
        self._writer.writerow([cell(value) for value in row])


def write_leaderboard(result: dict[str, Any], out: Path) -> tuple[Path, Path, Path]:
    """leaderboard.json, .csv and .html in ``out``, each written atomically."""
    from orchestrator.report.leaderboard_view import render_leaderboard_html

    out.mkdir(parents=True, exist_ok=True)
    paths = out / "leaderboard.json", out / "leaderboard.csv", out / "leaderboard.html"
    atomic_write_text(
        paths[0], json.dumps(result, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    )
    atomic_write_text(paths[1], leaderboard_csv(result))
    atomic_write_text(paths[2], render_leaderboard_html(result))
    return paths
