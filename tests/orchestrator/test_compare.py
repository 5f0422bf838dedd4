"""``editbench compare``: paired differences on shared items, bootstrap intervals, refusals."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import resolve_settings
from orchestrator.progress import NullProgress
from orchestrator.retry import RetryPolicy
from orchestrator.runner import run_benchmark
from orchestrator.store import JsonlLog
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices

POLICY = RetryPolicy(job_deadline_s=600, probe_interval_s=0.01)


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def run_sample(out: Path, services: FakeServices, **changes: Any) -> None:
    settings = resolve_settings(
        {
            "benchmark": "sample",
            "out": out,
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
            **changes,
        },
        environ={},
    )
    asyncio.run(
        run_benchmark(
            settings, NullProgress(), transport=services.transport(), policy=POLICY, sleep=_no_sleep
        )
    )


def compare(*args: str) -> Any:
    return CliRunner().invoke(app, ["compare", *args], terminal_width=240)


def two_models(tmp_path: Path) -> tuple[Path, Path]:
    """Baseline, and a 'better model' whose colour edits get +2 SC from the same judge."""
    a, b = tmp_path / "model-a", tmp_path / "model-b"
    run_sample(a, FakeServices())
    run_sample(b, FakeServices(sc_shift=lambda category: 2.0 if category == "color" else 0.0))
    return a, b


def overall_by_id(run: Path) -> dict[str, float]:
    return {
        r["item_id"]: r["overall"] for r in JsonlLog(run / "results.jsonl").read() if r["scored"]
    }


def test_compare_pairs_items_and_finds_the_better_category(tmp_path: Path) -> None:
    a, b = two_models(tmp_path)
    out = tmp_path / "cmp"
    shown = compare(str(a), str(b), "--out", str(out))
    assert shown.exit_code == 0, shown.output
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert (out / "compare.html").is_file()
    assert result["baseline"] == "model-a"
    assert [run["label"] for run in result["runs"]] == ["model-a", "model-b"]
    (table,) = result["tables"]
    rows = table["rows"]
    assert set(rows) == {"color", "物理", "removal"}

    score_a, score_b = overall_by_id(a), overall_by_id(b)
    color = [i for i in score_a if i.startswith("color")]
    expected = statistics.fmean(score_b[i] - score_a[i] for i in color)
    diff = rows["color"]["diffs"][0]
    assert diff["pairs"] == len(color) == 4
    assert diff["mean_diff"] == round(expected, 6)
    assert (diff["better"], diff["worse"], diff["equal"]) == (4, 0, 0)
    # The paired t interval and test (scipy's), Holm over the three rows.
    expected_t = scipy_stats.ttest_rel([score_b[i] for i in color], [score_a[i] for i in color])
    ci = expected_t.confidence_interval(0.95)
    assert diff["n"] == 4 and diff["method"] == "t"
    assert diff["ci95"] == pytest.approx([ci.low, ci.high], abs=2e-6)
    assert diff["p"] == pytest.approx(expected_t.pvalue, abs=2e-6)
    assert diff["p_holm"] == pytest.approx(min(1.0, 3 * expected_t.pvalue), abs=6e-6)
    assert diff["significant"] == (diff["p_holm"] < 0.05)
    assert diff["ci95"][0] <= diff["mean_diff"] <= diff["ci95"][1]
    for same in ("物理", "removal"):
        unchanged = rows[same]["diffs"][0]
        assert (unchanged["mean_diff"], unchanged["equal"]) == (0.0, 4)
        assert unchanged["ci95"] == [0.0, 0.0] and not unchanged["significant"]
        assert unchanged["p"] == 1.0
    # Average: the unweighted mean of the row differences; every shared item in 'all pairs'.
    average = table["average"]["diffs"][0]
    assert average["mean_diff"] == round(expected / 3, 6)
    assert average["method"] == "welch-t" and average["n"] == 12
    # Its interval, Welch-Satterthwaite over the three rows (written out): only colour's
    # differences vary, so var = s_color^2 / 4 / 3^2 with 3 degrees of freedom; not the t
    # interval of the twelve differences taken as one sample.
    spread = statistics.variance(score_b[i] - score_a[i] for i in color) / len(color)
    half = scipy_stats.t.ppf(0.975, len(color) - 1) * spread**0.5 / 3
    assert average["ci95"] == pytest.approx([expected / 3 - half, expected / 3 + half], abs=2e-6)
    assert table["micro"]["diffs"][0]["pairs"] == 12
    # The terminal shows the table and where the files are.
    assert "color" in shown.output and "Average" in shown.output
    assert f"{expected:+.3f}" in shown.output
    assert "n=4" in shown.output and "Holm" in shown.output
    assert "compare.html" in shown.output
    verdict = average["mean_diff"]
    assert f"model-b - model-a (all items, overall, Average): {verdict:+.3f}" in shown.output


def test_only_items_both_runs_scored_are_paired(tmp_path: Path) -> None:
    a = tmp_path / "all"
    run_sample(a, FakeServices())
    part = tmp_path / "part"
    run_sample(part, FakeServices(), categories=["color"], limit=2)
    out = tmp_path / "cmp"
    assert compare(str(a), str(part), "--out", str(out)).exit_code == 0
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    rows = result["tables"][0]["rows"]
    assert rows["color"]["diffs"][0]["pairs"] == 2
    assert rows["物理"]["diffs"][0]["pairs"] == 0
    assert rows["物理"]["diffs"][0]["mean_diff"] is None
    assert rows["物理"]["runs"][1]["n"] == 0


def test_runs_judged_with_another_protocol_are_refused_unless_allowed(tmp_path: Path) -> None:
    a, b = two_models(tmp_path)
    scores = JsonlLog(b / "scores.jsonl").read()
    for record in scores:
        record["protocol_hash"] = "sha256:another-protocol"
    (b / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores), encoding="utf-8")
    out = tmp_path / "cmp"
    refused = compare(str(a), str(b), "--out", str(out))
    assert refused.exit_code == 2
    assert "judge protocol hashes" in refused.output
    assert "--allow-different-judges" in refused.output
    assert not (out / "compare.json").exists()

    allowed = compare(str(a), str(b), "--out", str(out), "--allow-different-judges")
    assert allowed.exit_code == 0, allowed.output
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert any("compared anyway" in w for w in result["warnings"])
    # Items judged under different protocols never pair.
    assert result["tables"][0]["micro"]["diffs"][0]["pairs"] == 0


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    a = tmp_path / "a"
    run_sample(a, FakeServices())
    (tmp_path / "empty").mkdir()
    refused = compare(str(a), str(tmp_path / "empty"), "--out", str(tmp_path / "cmp"))
    assert refused.exit_code == 2
    assert "not a run folder" in refused.output


def test_many_small_rows_are_held_to_holms_standard(tmp_path: Path) -> None:
    """Three rows each just under p = 0.05 alone: uncorrected they would all be starred."""
    from orchestrator.compare import _difference, _holm_rows

    rows = [_difference([[0.9, 1.1, 0.2, 1.6]]) for _ in range(3)]
    assert all(r.significant for r in rows)  # the uncorrected interval excludes 0
    _holm_rows(rows)
    p = scipy_stats.ttest_1samp([0.9, 1.1, 0.2, 1.6], 0.0).pvalue
    assert 0.01 < p < 0.05
    for r in rows:
        assert r.p_holm == pytest.approx(min(1.0, 3 * p), abs=1e-5)
        assert r.significant_uncorrected and not r.significant


def test_gedit_runs_compare_per_language_and_on_the_intersection(tmp_path: Path) -> None:
    from tests.orchestrator.test_reporting import gedit_layout, run_fake

    gedit_layout(tmp_path / "GEdit-Bench")
    a, b = tmp_path / "a", tmp_path / "b"
    run_fake(tmp_path / "GEdit-Bench", a)
    better = FakeServices(sc_shift=lambda task: 1.0 if task == "color_alter" else 0.0)
    run_fake(tmp_path / "GEdit-Bench", b, services=better)
    out = tmp_path / "cmp"
    shown = compare(str(a), str(b), "--out", str(out))
    assert shown.exit_code == 0, shown.output
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    tables = {t["title"]: t for t in result["tables"]}
    assert list(tables) == [
        "cn",
        "cn · intersection (Intersection_exist)",
        "en",
        "en · intersection (Intersection_exist)",
    ]
    assert tables["en"]["row_label"] == "task_type"
    en = tables["en"]["rows"]
    # The unscored en/color_alter item pairs with nothing: 3 of its 4 items pair.
    assert en["color_alter"]["diffs"][0]["pairs"] == 3
    assert en["color_alter"]["diffs"][0]["better"] == 3
    assert en["background_change"]["diffs"][0]["mean_diff"] == 0.0
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert "Average over task_type" in html


def test_compare_json_reads_back_as_the_typed_comparison_it_was_written_from(
    tmp_path: Path,
) -> None:
    from orchestrator.compare import compare_runs, load_run, write_compare
    from orchestrator.comparison import COMPARE_SCHEMA, ComparisonError, read_comparison

    a, b = two_models(tmp_path)
    result = compare_runs([load_run(a), load_run(b)])
    json_path, _ = write_compare(result, tmp_path / "cmp")
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written["schema"] == COMPARE_SCHEMA
    read = read_comparison(json_path)
    assert read == result
    color = read.tables[0].rows["color"].diffs[0]
    assert color.better == color.pairs == 4 and color.mean_diff is not None and color.mean_diff > 0
    assert [run.label for run in read.runs] == ["model-a", "model-b"]

    # A compare.json written before it was typed (no schema key) reads, as schema 0.
    del written["schema"]
    json_path.write_text(json.dumps(written), encoding="utf-8")
    assert read_comparison(json_path).schema_version == 0

    # A damaged one names the file and the field, or the line and column.
    written["tables"][0]["rows"]["color"]["diffs"][0]["better"] = "two"
    json_path.write_text(json.dumps(written), encoding="utf-8")
    with pytest.raises(
        ComparisonError, match=r"compare\.json: tables\.0\.rows\.color\.diffs\.0\.better"
    ):
        read_comparison(json_path)
    json_path.write_text('{"metric": ', encoding="utf-8")
    with pytest.raises(ComparisonError, match=r"compare\.json:1:\d+: not valid JSON"):
        read_comparison(json_path)
