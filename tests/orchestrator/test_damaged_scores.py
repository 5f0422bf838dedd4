"""Damaged scores (issue 31, class 10): a record that is valid JSON and a valid record, but holds
a metric value no mean may use (NaN, an infinity, a number off the protocol's scale) is bounded
on read: left out of every mean, named in summary.json's ``left_out`` and a warning, and
``report`` and ``compare`` finish with strict JSON (no NaN in any file)."""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.orchestrator.harness import editbench, finish
from tests.orchestrator.test_damaged_records import DAMAGED_LINE, _damage, finished_run

__all__ = ["finished_run"]  # the fixture, shared with test_damaged_records

Damage = Callable[[dict[str, Any]], Any]


def _record_metric(name: str, value: float) -> Damage:
    return lambda r: {**r, "metrics": {**r["metrics"], name: value}}


def _answer_metric(name: str, value: float) -> Damage:
    def damage(record: dict[str, Any]) -> dict[str, Any]:
        score = record["score"]
        return {**record, "score": {**score, "metrics": {**score["metrics"], name: value}}}

    return damage


def _legacy(name: str, value: float) -> Damage:
    """A record as editbench wrote them before metrics: sc/pq/overall only, one damaged."""

    def damage(record: dict[str, Any]) -> dict[str, Any]:
        score = {k: v for k, v in record["score"].items() if k != "metrics"}
        values = dict(record["metrics"])
        values[name] = value
        fields = {k: v for k, v in record.items() if k != "metrics"}
        return {**fields, **values, "score": {**score, **values}}

    return damage


# case -> (damage, the metric left out, how the value reads back, why it is left out)
NOT_FINITE = "not a finite number"
OFF_SCALE = "outside the protocol's scale 0..10"
CASES: dict[str, tuple[Damage, str, str, str]] = {
    "record overall NaN": (_record_metric("overall", float("nan")), "overall", "nan", NOT_FINITE),
    "record sc +inf": (_record_metric("sc", float("inf")), "sc", "inf", NOT_FINITE),
    "answer pq -inf": (_answer_metric("pq", float("-inf")), "pq", "-inf", NOT_FINITE),
    "answer overall -5": (_answer_metric("overall", -5.0), "overall", "-5", OFF_SCALE),
    "record sc 11 on 0..10": (_record_metric("sc", 11.0), "sc", "11", OFF_SCALE),
    "legacy record overall NaN": (_legacy("overall", float("nan")), "overall", "nan", NOT_FINITE),
    "legacy record pq -5": (_legacy("pq", -5.0), "pq", "-5", OFF_SCALE),
}


def _strict_json(path: Path) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"{path.name} holds {token}: not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_score_is_left_out_and_reported_by_report_and_compare(
    finished_run: Path, tmp_path: Path, case: str
) -> None:
    damage, metric, shown, reason = CASES[case]
    clean = tmp_path / "clean"
    shutil.copytree(finished_run, clean)
    item_id = _damage(finished_run, "scores.jsonl", damage)

    code, _, stderr = finish(editbench("report", str(finished_run)), timeout_s=120)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    summary = _strict_json(finished_run / "summary.json")
    assert summary["left_out"] == [
        {"item_id": item_id, "metric": metric, "value": shown, "reason": reason}
    ]
    # The warning names the item, the metric, the value and why, in summary.json and the page
    # (whose legend always says that unscored answers are "left out": that alone proves nothing).
    warning = f"left out of the means: {item_id} {metric} = {shown} ({reason})"
    assert any(warning in w for w in summary["warnings"]), summary["warnings"]
    micro = summary["overall"]["micro"]
    assert micro["scored"] == 6  # the item is still scored: only its damaged value is left out
    assert micro["metrics"][metric]["n"] == 5
    others = [m for m in ("sc", "pq", "overall") if m != metric]
    assert all(micro["metrics"][m]["n"] == 6 for m in others)
    assert micro["metrics"][metric]["min"] >= 0 and micro["metrics"][metric]["max"] <= 10
    lines = (finished_run / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = {r["item_id"]: r for r in map(json.loads, lines)}
    assert rows[item_id]["metrics"][metric] is None
    assert rows[item_id]["left_out"][0]["metric"] == metric
    page = html.unescape((finished_run / "report.html").read_text(encoding="utf-8"))
    assert warning in page

    out = tmp_path / "compare"
    code, _, stderr = finish(
        editbench("compare", str(clean), str(finished_run), "--metric", metric, "-o", str(out)),
        timeout_s=120,
    )
    assert code == 0, stderr
    assert "Traceback" not in stderr
    result = _strict_json(out / "compare.json")
    assert [m["name"] for m in result["metrics"]] == ["sc", "pq", "overall"]
    pairs = {m["name"]: m["tables"][0]["micro"]["diffs"][0]["pairs"] for m in result["metrics"]}
    assert pairs[metric] == 5  # the damaged item pairs for no mean
    assert all(pairs[m] == 6 for m in others)


def test_the_damaged_line_is_the_one_named(finished_run: Path) -> None:
    assert DAMAGED_LINE == 2


def test_a_run_written_before_metrics_still_reports_and_compares(
    finished_run: Path, tmp_path: Path
) -> None:
    # Every record as older editbench wrote it (sc/pq/overall only), the protocol's description
    # without metrics: it reads as VIEScore's three, with the same numbers.
    clean = tmp_path / "clean"
    shutil.copytree(finished_run, clean)
    scores = finished_run / "scores.jsonl"
    old = []
    for line in scores.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        values = record.pop("metrics")
        score = {k: v for k, v in record["score"].items() if k != "metrics"}
        old.append(json.dumps({**record, **values, "score": score}))
    scores.write_text("\n".join(old) + "\n", encoding="utf-8")
    provenance = json.loads((finished_run / "provenance.json").read_text(encoding="utf-8"))
    protocol = provenance["services"]["protocol"]
    for key in ("metrics", "headline", "scale", "modes"):
        protocol.pop(key, None)
    (finished_run / "provenance.json").write_text(json.dumps(provenance), encoding="utf-8")

    for run in (clean, finished_run):
        code, _, stderr = finish(editbench("report", str(run)), timeout_s=120)
        assert code == 0, stderr
    before, after = (_strict_json(run / "summary.json") for run in (clean, finished_run))
    assert [m["name"] for m in after["metric_set"]["metrics"]] == ["sc", "pq", "overall"]
    assert after["overall"]["micro"]["metrics"] == before["overall"]["micro"]["metrics"]
    assert after["left_out"] == []

    out = tmp_path / "compare"
    code, _, stderr = finish(
        editbench("compare", str(clean), str(finished_run), "-o", str(out)), timeout_s=120
    )
    assert code == 0, stderr
    result = _strict_json(out / "compare.json")
    assert result["metric"] == "overall"
    diffs = result["tables"][0]["micro"]["diffs"][0]
    assert (diffs["pairs"], diffs["equal"]) == (6, 6)
