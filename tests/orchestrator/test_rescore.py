"""``editbench rescore``: another judge's scores beside the run's own; --judge chooses one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.judges import run_judges
from orchestrator.progress import NullProgress
from orchestrator.rescore import RescoreRequest, rescore_run
from orchestrator.store import JsonlLog, RunStore
from tests.orchestrator.fakes import JUDGE_MODEL, REWARD, FakeServices
from tests.orchestrator.test_compare import POLICY, _no_sleep, run_sample

OTHER_JUDGE = JUDGE_MODEL.model_copy(update={"id": "other/judge-moe", "revision": "r2"})


def other_judge() -> FakeServices:
    return FakeServices(judge_model=OTHER_JUDGE, judge_salt="other")


def rescore(run: Path, services: FakeServices, **changes: Any) -> Any:
    request = RescoreRequest(run=run, reward_url=REWARD, **changes)
    return asyncio.run(
        rescore_run(
            request, NullProgress(), transport=services.transport(), policy=POLICY, sleep=_no_sleep
        )
    )


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), terminal_width=240)


def overall(path: Path) -> dict[str, float]:
    return {r["item_id"]: r["overall"] for r in JsonlLog(path).read() if r["scored"]}


def test_rescore_keeps_both_judges_and_report_chooses_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_sample(run, FakeServices())
    own = overall(run / "results.jsonl")
    second = other_judge()
    outcome = rescore(run, second)
    assert outcome.counts.ok == 12 and outcome.counts.failed == 0
    assert outcome.judge.model == "other/judge-moe@r2"
    assert outcome.judge.label == "other/judge-moe:viescore:expected"
    # The run's own scores are untouched; the new judge's sit in rescores.jsonl.
    assert len(JsonlLog(run / "scores.jsonl").read()) == 12
    rescored = JsonlLog(run / "rescores.jsonl").read()
    assert {r["model"]["id"] for r in rescored} == {"other/judge-moe"}
    assert [j.label for j in run_judges(RunStore(run))] == [
        "fake-judge:viescore:expected",
        "other/judge-moe:viescore:expected",
    ]
    # Its report sits beside the run's own, named for it, with its own scores.
    slug = outcome.judge.slug
    theirs = overall(run / f"results-{slug}.jsonl")
    assert (run / f"report-{slug}.html").is_file()
    assert set(theirs) == set(own) and theirs != own
    assert overall(run / "results.jsonl") == own
    summary = json.loads((run / f"summary-{slug}.json").read_text(encoding="utf-8"))
    assert summary["judge"]["model"] == "other/judge-moe@r2"
    assert summary["models"]["judge"] == ["other/judge-moe@r2"]
    assert len(summary["judges"]) == 2
    provenance = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    (entry,) = provenance["rescores"]
    assert entry["judge"]["label"] == outcome.judge.label
    assert entry["counts"]["ok"] == 12

    # report --judge by model id (short or full) rewrites that judge's files only.
    shown = cli("report", str(run), "--judge", "judge-moe")
    assert shown.exit_code == 0, shown.output
    assert f"report-{slug}.html" in shown.output
    own_slug = run_judges(RunStore(run))[0].slug
    shown = cli("report", str(run), "--judge", "fake-judge")
    assert shown.exit_code == 0, shown.output
    assert overall(run / f"results-{own_slug}.jsonl") == own
    # The run's own report, written again, links every judge's.
    assert cli("report", str(run)).exit_code == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "scored by 2 judges" in html and f"report-{slug}.html" in html


def test_rescore_resumes_and_sends_nothing_for_finished_jobs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_sample(run, FakeServices())
    second = other_judge()
    rescore(run, second)
    sent = second.count("reward POST /v1/scores")
    again = rescore(run, second)
    assert again.counts.skipped == 12 and again.counts.ok == 0
    assert second.count("reward POST /v1/scores") == sent
    assert len(JsonlLog(run / "rescores.jsonl").read()) == 12
    # The run's own judge again: every job is already in scores.jsonl.
    same = FakeServices()
    rescored = rescore(run, same)
    assert rescored.counts.skipped == 12
    assert same.count("reward POST /v1/scores") == 0


def test_an_unknown_or_ambiguous_judge_is_refused_with_the_run_s_judges(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_sample(run, FakeServices())
    rescore(run, other_judge())
    unknown = cli("report", str(run), "--judge", "gpt-4.1")
    assert unknown.exit_code == 2
    assert "fake-judge:viescore:expected" in unknown.output
    assert "other/judge-moe:viescore:expected" in unknown.output
    ambiguous = cli("report", str(run), "--judge", "viescore")
    assert ambiguous.exit_code == 2
    assert "MODEL:PROTOCOL:MODE" in ambiguous.output


def test_compare_pairs_two_runs_under_the_judge_it_is_told(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run_sample(a, FakeServices())
    run_sample(b, FakeServices(sc_shift=lambda c: 1.0 if c == "color" else 0.0))
    for run in (a, b):
        rescore(run, other_judge())
    out = tmp_path / "cmp"
    shown = cli("compare", str(a), str(b), "--out", str(out), "--judge", "judge-moe")
    assert shown.exit_code == 0, shown.output
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert {tuple(r["judge"]) for r in result["runs"]} == {("other/judge-moe@r2",)}
    # The same comparison by hand, from the second judge's results of each run.
    slug = run_judges(RunStore(a))[1].slug
    score_a, score_b = overall(a / f"results-{slug}.jsonl"), overall(b / f"results-{slug}.jsonl")
    micro = result["tables"][0]["micro"]["diffs"][0]
    expected = sum(score_b[i] - score_a[i] for i in score_a) / len(score_a)
    assert micro["mean_diff"] == round(expected, 6)


def test_every_summary_says_what_judging_cost(tmp_path: Path) -> None:
    from shared_schemas import TokenUsage

    run = tmp_path / "run"
    run_sample(run, FakeServices(), items_per_request=3)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    cost = summary["judge_cost"]
    # The fake judge's batch of k items runs 0.01 * k s: 0.01 device-s per item.
    assert cost["items"] == 12 and cost["items_with_timings"] == 12
    assert cost["device_s_per_item"] == pytest.approx(0.01)
    assert cost["device_s_total"] == pytest.approx(0.12)
    provenance = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    wall = provenance["invocations"][-1]["score_wall_s"]
    assert cost["items_per_s"] == pytest.approx(12 / wall, rel=1e-3)
    assert cost["tokens_total"] is None  # a local judge reports no tokens
    shown = cli("report", str(run))
    assert "judge cost: 0.010 device-s per item" in shown.output
    assert "judge cost: 0.010 device-s per item" in (run / "report.html").read_text("utf-8")

    # An OpenAI-compatible judge reports tokens per question (2 questions an item here).
    remote = other_judge()
    remote.judge_usage = TokenUsage.of(prompt_tokens=100, completion_tokens=5)
    outcome = rescore(run, remote)
    theirs = json.loads((run / f"summary-{outcome.judge.slug}.json").read_text("utf-8"))
    assert theirs["judge_cost"]["tokens_total"] == 12 * 2 * 105
    assert theirs["judge_cost"]["tokens_per_item"] == 210
    entry = provenance_rescore(run)
    assert theirs["judge_cost"]["items_per_s"] == pytest.approx(
        12 / entry["score_wall_s"], rel=1e-3
    )


def provenance_rescore(run: Path) -> dict[str, Any]:
    provenance = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    entry: dict[str, Any] = provenance["rescores"][-1]
    return entry
