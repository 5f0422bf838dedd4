"""``editbench agreement``: two judges on one run's edits, checked against scipy."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sp

from orchestrator.judges import run_judges
from orchestrator.store import JsonlLog, RunStore
from tests.orchestrator.fakes import FakeServices
from tests.orchestrator.test_compare import run_sample
from tests.orchestrator.test_rescore import cli, other_judge, overall, rescore


@pytest.fixture
def two_judges(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run_sample(run, FakeServices())
    rescore(run, other_judge())
    return run


def test_agreement_report_matches_scipy_per_category_and_overall(two_judges: Path) -> None:
    run = two_judges
    shown = cli("agreement", str(run), "--resamples", "400")
    assert shown.exit_code == 0, shown.output
    result = json.loads((run / "agreement.json").read_text(encoding="utf-8"))
    assert (run / "agreement.html").is_file()
    assert "least agreeing" in shown.output and "Kendall" in shown.output
    own, second = run_judges(RunStore(run))
    assert result["judges"]["a"]["label"] == own.label
    assert result["judges"]["b"]["label"] == second.label
    a = overall(run / "results.jsonl")
    b = overall(run / f"results-{second.slug}.jsonl")
    category = {r["item_id"]: r["category"] for r in JsonlLog(run / "results.jsonl").read()}
    categories = set(category.values())
    assert set(result["categories"]) == categories == {"color", "removal", "物理"}
    for name, ids in [(c, sorted(i for i in a if category[i] == c)) for c in categories] + [
        ("overall", sorted(a))
    ]:
        got = result["overall"] if name == "overall" else result["categories"][name]
        x, y = [a[i] for i in ids], [b[i] for i in ids]
        assert got["n"] == len(ids)
        assert got["spearman"]["estimate"] == pytest.approx(sp.spearmanr(x, y).statistic, abs=1e-6)
        assert got["kendall_tau_b"]["estimate"] == pytest.approx(
            sp.kendalltau(x, y).statistic, abs=1e-6
        )
        signs = [
            np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in combinations(range(len(x)), 2)
        ]
        agree, disagree = sum(s > 0 for s in signs), sum(s < 0 for s in signs)
        assert got["pairwise_agreement"]["estimate"] == pytest.approx(agree / (agree + disagree))
        diffs = np.subtract(y, x)
        ci = sp.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
        assert got["mean_offset"]["estimate"] == pytest.approx(diffs.mean(), abs=1e-6)
        assert got["mean_offset"]["low"] == pytest.approx(ci.low, abs=1e-6)
        assert got["mean_offset"]["high"] == pytest.approx(ci.high, abs=1e-6)
        assert got["offset_spread"]["estimate"] == pytest.approx(np.std(diffs, ddof=1), abs=1e-6)
        for key in ("spearman", "kendall_tau_b", "pairwise_agreement", "offset_spread"):
            assert got[key]["n"] == len(ids) and got[key]["method"] == "bca"
            if got[key]["low"] is not None:
                assert got[key]["low"] <= got[key]["estimate"] <= got[key]["high"]
    assert result["overall"]["spearman"]["low"] is not None  # 12 items: an interval exists
    # Every category, least agreeing first (a list of one or none would be sorted too).
    assert sorted(result["disagree_most"]) == sorted(categories)
    taus = [result["categories"][c]["kendall_tau_b"]["estimate"] for c in result["disagree_most"]]
    assert taus == sorted(taus)


def test_agreement_is_seeded_and_goes_where_it_is_told(two_judges: Path, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "one", tmp_path / "two"
    for out in (out1, out2):
        shown = cli("agreement", str(two_judges), "--out", str(out), "--resamples", "300")
        assert shown.exit_code == 0, shown.output
    first = json.loads((out1 / "agreement.json").read_text(encoding="utf-8"))
    assert first == json.loads((out2 / "agreement.json").read_text(encoding="utf-8"))
    assert not (two_judges / "agreement.json").exists()


def test_agreement_needs_two_judges_and_names_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_sample(run, FakeServices())
    refused = cli("agreement", str(run))
    assert refused.exit_code == 2
    assert "rescore" in refused.output and "fake-judge:viescore:expected" in refused.output
    rescore(run, other_judge())
    same = cli("agreement", str(run), "--judges", "fake-judge", "fake-judge")
    assert same.exit_code == 2 and "same judge twice" in same.output
    unknown = cli("agreement", str(run), "--judges", "fake-judge", "gpt-4.1")
    assert unknown.exit_code == 2 and "judge-moe" in unknown.output
    swapped = cli(
        "agreement", str(run), "--judges", "judge-moe", "fake-judge", "--resamples", "200"
    )
    assert swapped.exit_code == 0, swapped.output
    result = json.loads((run / "agreement.json").read_text(encoding="utf-8"))
    assert result["judges"]["a"]["model"] == "other/judge-moe@r2"
