"""``editbench leaderboard``: runs ranked by the headline, checked against scipy."""

from __future__ import annotations

import csv
import json
import math
import statistics
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sp

from orchestrator.judges import run_judges
from orchestrator.store import JsonlLog, RunStore
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.fakes import FakeServices
from tests.orchestrator.test_compare import run_sample
from tests.orchestrator.test_rescore import cli, other_judge, rescore

SHIFTS = {
    "editor-small": lambda c: 0.0,
    "editor-large": lambda c: 2.5,
    "editor-colour-tuned": lambda c: 3.0 if c == "color" else 0.5,
}


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    runs = []
    for name, shift in SHIFTS.items():
        run = tmp_path / name
        run_sample(run, FakeServices(sc_shift=shift))
        runs.append(run)
    return runs


def scores(run: Path, results: str = "results.jsonl") -> dict[str, tuple[str, float]]:
    return {
        r["item_id"]: (r["category"], r["overall"])
        for r in JsonlLog(run / results).read()
        if r["scored"]
    }


def macro(values: dict[str, tuple[str, float]]) -> float:
    by: dict[str, list[float]] = {}
    for category, value in values.values():
        by.setdefault(category, []).append(value)
    return statistics.fmean(statistics.fmean(v) for v in by.values())


def macro_interval(values: dict[str, tuple[str, float]]) -> tuple[float, float]:
    """95% interval of the mean of category means: Var = sum(s_c^2 / n_c) / K^2, with
    Satterthwaite's degrees of freedom."""
    by: dict[str, list[float]] = {}
    for category, value in values.values():
        by.setdefault(category, []).append(value)
    parts = [np.var(v, ddof=1) / len(v) for v in by.values()]
    df = sum(parts) ** 2 / sum(p**2 / (len(v) - 1) for p, v in zip(parts, by.values(), strict=True))
    half = sp.t.ppf(0.975, df) * math.sqrt(sum(parts)) / len(by)
    centre = float(np.mean([np.mean(v) for v in by.values()]))
    return centre - half, centre + half


def test_leaderboard_ranks_by_the_headline_with_intervals(
    three_runs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "board"
    shown = cli("leaderboard", *map(str, three_runs), "--out", str(out))
    assert shown.exit_code == 0, shown.output
    result = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    values = {run.name: scores(run) for run in three_runs}
    headline = {name: macro(v) for name, v in values.items()}
    expected_order = sorted(headline, key=lambda n: -headline[n])
    assert [m["label"] for m in result["models"]] == expected_order
    assert [m["rank"] for m in result["models"]] == [1, 2, 3]
    for m in result["models"]:
        h = m["headline"]
        assert h["estimate"] == pytest.approx(headline[m["label"]], abs=1e-6)
        assert h["n"] == 12 and h["method"] == "welch-t"
        # Welch-Satterthwaite over the categories (written out with scipy's t): the spread
        # of each category's mean, not of the twelve items taken as one sample.
        low, high = macro_interval(values[m["label"]])
        assert (h["low"], h["high"]) == pytest.approx((low, high), abs=1e-6)
        assert set(m["rows"]) == {"color", "removal", "物理"}
        assert m["rows"]["color"]["n"] == 4
        assert Path(out / m["report"]).resolve() == (tmp_path / m["label"] / "report.html")
    # Adjacent paired differences: per category mean difference, then their mean (macro).
    for upper, lower in zip(result["models"], result["models"][1:], strict=False):
        a, b = values[lower["label"]], values[upper["label"]]
        by: dict[str, list[float]] = {}
        for item, (category, value) in a.items():
            by.setdefault(category, []).append(b[item][1] - value)
        diff = upper["vs_next"]
        assert diff["next"] == lower["label"] and diff["pairs"] == 12
        assert diff["estimate"] == pytest.approx(
            statistics.fmean(statistics.fmean(v) for v in by.values()), abs=1e-6
        )
        # Its interval: Welch-Satterthwaite over the categories' differences, as the headline's.
        differences = {i: (category, b[i][1] - value) for i, (category, value) in a.items()}
        assert (diff["low"], diff["high"]) == pytest.approx(macro_interval(differences), abs=1e-6)
    assert result["models"][-1]["vs_next"] is None
    # Rank ranges: the headline is macro, so each pair is tested as Welch's t on the category
    # mean differences (written out with scipy's t), then Holm over the three pairs.
    names = list(values)
    pairs = list(combinations(names, 2))

    def welch(a: str, b: str) -> tuple[float, float]:
        by: dict[str, list[float]] = {}
        for item, (category, value) in values[a].items():
            by.setdefault(category, []).append(values[b][item][1] - value)
        parts = [np.var(d, ddof=1) / len(d) for d in by.values()]
        centre = float(np.mean([np.mean(d) for d in by.values()]))
        se = math.sqrt(sum(parts)) / len(by)
        df = sum(parts) ** 2 / sum(
            p**2 / (len(d) - 1) for p, d in zip(parts, by.values(), strict=True)
        )
        t = centre / se
        return t, float(2 * sp.t.sf(abs(t), df))

    tests = [SimpleNamespace(statistic=t, pvalue=p) for t, p in (welch(a, b) for a, b in pairs)]
    order = sorted(range(len(tests)), key=lambda k: tests[k].pvalue)
    adjusted, running = [0.0] * len(tests), 0.0
    for position, k in enumerate(order):
        running = max(running, min(1.0, (len(tests) - position) * tests[k].pvalue))
        adjusted[k] = running
    better = dict.fromkeys(names, 0)
    worse = dict.fromkeys(names, 0)
    for (a, b), test, p in zip(pairs, tests, adjusted, strict=True):
        if p < 0.05:
            winner, loser = (b, a) if test.statistic > 0 else (a, b)
            better[loser] += 1
            worse[winner] += 1
    for m in result["models"]:
        assert m["rank_interval"] == [1 + better[m["label"]], 3 - worse[m["label"]]]
    # The CSV and the page carry the same ranking; the terminal shows it too.
    rows = list(csv.DictReader((out / "leaderboard.csv").read_text("utf-8").splitlines()))
    assert [r["label"] for r in rows] == expected_order
    assert rows[0]["物理 mean"] and rows[0]["n"] == "12"
    html = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert all(name in html for name in names) and "物理" in html
    assert 'href="../editor-large/report.html"' in html
    assert expected_order[0] in shown.output and "leaderboard.html" in shown.output


def test_runs_of_another_benchmark_are_refused_unless_allowed(
    three_runs: list[Path], tmp_path: Path
) -> None:
    rows = [{"id": f"x-{i}", "category": "color", "instruction": f"edit {i}"} for i in range(3)]
    manifest = write_manifest(tmp_path / "other-bench", rows)
    other = tmp_path / "other-run"
    run_sample(other, FakeServices(), benchmark=str(manifest))
    out = tmp_path / "board"
    refused = cli("leaderboard", str(three_runs[0]), str(other), "--out", str(out))
    assert refused.exit_code == 2
    assert "different benchmarks" in refused.output and "sample" in refused.output
    assert "--allow-different-benchmarks" in refused.output
    assert not (out / "leaderboard.json").exists()
    allowed = cli(
        "leaderboard", str(three_runs[0]), str(other), "--out", str(out),
        "--allow-different-benchmarks",
    )  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    result = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert any("different benchmarks" in w for w in result["warnings"])


def test_two_judges_rankings_are_compared_by_kendall_tau(
    three_runs: list[Path], tmp_path: Path
) -> None:
    # The fake judge does not look at the image: the second judge's view of each "model" is
    # given as a shift of its own (it prefers the small editor to the large one).
    for run, shift in zip(three_runs, (1.0, 0.0, 2.0), strict=True):
        judge = other_judge()
        judge.sc_shift = lambda _c, s=shift: s
        rescore(run, judge)
    out = tmp_path / "board"
    shown = cli(
        "leaderboard", *map(str, three_runs), "--out", str(out),
        "--judge", "fake-judge", "--compare-judge", "judge-moe", "--resamples", "300",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    result = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    slugs = [j.slug for j in run_judges(RunStore(three_runs[0]))]
    first = {r.name: macro(scores(r)) for r in three_runs}
    second = {r.name: macro(scores(r, f"results-{slugs[1]}.jsonl")) for r in three_runs}
    names = sorted(first)
    expected = sp.kendalltau([first[n] for n in names], [second[n] for n in names]).statistic
    c = result["compare_judge"]
    assert c["models"] == 3
    assert c["kendall_tau_b"] == pytest.approx(expected)
    assert c["order"] == sorted(second, key=lambda n: -second[n])
    assert c["interval_on_shared_items"]["n"] == 12
    # Each run's report under the chosen judge is linked, and written when it was missing.
    assert result["models"][0]["report"].endswith(f"report-{slugs[0]}.html")
    assert all((out / m["report"]).is_file() for m in result["models"])
    assert "Kendall tau-b between the rankings" in shown.output


def test_a_benchmark_with_its_own_statistics_is_ranked_by_its_own_headline(
    tmp_path: Path,
) -> None:
    """ImgEdit's Overall: per item the mean of three metrics (2 places), per edit type the mean
    (2 places), Overall the mean of the types (2 places), written out here."""
    rows = [
        {"id": f"{kind}-{i}", "category": kind, "instruction": f"{kind} edit {i}"}
        for kind in ("add", "remove", "style")
        for i in range(4)
    ]
    manifest = write_manifest(tmp_path / "imgedit-like", rows)
    (manifest.parent / "reporting.json").write_text(
        json.dumps(
            {
                "statistics": "imgedit",
                "metric_names": {"adherence": "sc", "quality": "pq", "preservation": "overall"},
            }
        ),
        encoding="utf-8",
    )
    runs = []
    for name, shift in (("low", 0.0), ("high", 2.0), ("mid", 1.0)):
        run = tmp_path / name
        run_sample(run, FakeServices(sc_shift=lambda _c, s=shift: s), benchmark=str(manifest))
        runs.append(run)
    out = tmp_path / "board"
    shown = cli("leaderboard", *map(str, runs), "--out", str(out), "--resamples", "300")
    assert shown.exit_code == 0, shown.output
    result = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    expected = {}
    for run in runs:
        by: dict[str, list[float]] = {}
        for r in JsonlLog(run / "results.jsonl").read():
            item = round((r["sc"] + r["pq"] + r["overall"]) / 3, 2)
            by.setdefault(r["category"], []).append(item)
        types = [round(sum(v) / len(v), 2) for v in by.values()]  # as the script: sum / len
        expected[run.name] = round(sum(types) / len(types), 2)
    assert [m["label"] for m in result["models"]] == sorted(expected, key=lambda n: -expected[n])
    assert "imgedit" in result["ranked_by"]
    for m in result["models"]:
        official = m["official_headline"]
        assert official["estimate"] == pytest.approx(expected[m["label"]])
        assert official["label"] == "Overall (1-5)" and official["n"] == 12
        assert official["low"] <= official["estimate"] <= official["high"]
    assert "Overall (1-5)" in (out / "leaderboard.html").read_text(encoding="utf-8")
