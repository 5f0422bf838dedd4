"""A judge protocol is one file (issue 25): a new YAML protocol with its own scale and metrics,
dropped into REWARD_PROTOCOLS_DIR, runs end to end on the tiny models (real services, real
CLI), and its metrics, exactly those, reach results.csv, summary.json, report.html and compare."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.orchestrator.harness import editbench, finish
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny

PROTOCOL = """\
name: three-ways
description: A 1-5 protocol written for this test, with three metrics.
scale: {min: 1, max: 5}
system: You judge image edits.
answer:
  expected: Answer with one integer from 1 to 5 and nothing else.
  generate: 'Reason briefly, then end with "Score: N", N from 1 to 5.'
questions:
  - name: fidelity
    images: [source, edited]
    prompt: "Instruction: {instruction}\\nHow faithfully does the edit follow it, from 1 to 5?"
  - name: looks
    images: [edited]
    prompt: How natural does the image look, from 1 to 5?
metrics:
  - {name: accuracy, label: Accuracy, score: fidelity}
  - {name: realism, label: Realism, score: looks}
  - {name: blend, label: Weighted blend, weighted_mean: {accuracy: 3, realism: 1}}
headline: blend
"""
METRICS = ["accuracy", "realism", "blend"]
OLD = {"sc", "pq", "overall"}


@pytest.fixture(scope="module")
def services(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("any-protocol")
    protocols = folder / "protocols"
    protocols.mkdir()
    (protocols / "three-ways.yaml").write_text(PROTOCOL, encoding="utf-8")
    editor = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": "tiny",
            "EDITOR_DEVICES": "cpu",
            "EDITOR_CACHE_DIR": str(model_cache),
            **REUSE_FREED_MEMORY,
        },
        folder / "editor.log",
    )
    reward = ServiceProcess(
        "reward_service",
        {
            "REWARD_MODEL": "tiny",
            "REWARD_DEVICES": "cpu",
            "REWARD_CACHE_DIR": str(model_cache),
            "REWARD_PROTOCOLS_DIR": str(protocols),
            **REUSE_FREED_MEMORY,
        },
        folder / "reward.log",
    )
    editor.start()
    reward.start()
    try:
        editor.wait_ready()
        reward.wait_ready()
        yield editor.url, reward.url
    finally:
        editor.stop()
        reward.stop()


def _run(services: tuple[str, str], out: Path, seed: str) -> None:
    editor, reward = services
    code, _, stderr = finish(
        editbench(
            "run",
            "--benchmark",
            "sample",
            "--limit-per-category",
            "1",
            "--out",
            str(out),
            "--editor-url",
            editor,
            "--reward-url",
            reward,
            "--protocol",
            "three-ways",
            "--steps",
            "2",
            "--size",
            "32x32",
            "--seed",
            seed,
        )
    )
    assert code == 0, stderr


def test_a_new_protocol_file_brings_its_own_metrics_everywhere(
    services: tuple[str, str], tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _run(services, first, "1")
    _run(services, second, "2")

    # results.jsonl: the protocol's metrics, computed by the judge (the weighted mean too).
    rows = [json.loads(line) for line in (first / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["scored"] for r in rows)
    for row in rows:
        assert list(row["metrics"]) == METRICS
        values = row["metrics"]
        assert all(1.0 <= values[m] <= 5.0 for m in METRICS)
        assert values["blend"] == pytest.approx((3 * values["accuracy"] + values["realism"]) / 4)
        assert not OLD & set(row)

    # results.csv: exactly those metric columns.
    with (first / "results.csv").open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert [c for c in header if c in METRICS] == METRICS
    assert not OLD & set(header)

    # summary.json: the metric set, every table's metrics, per category.
    summary = json.loads((first / "summary.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in summary["metric_set"]["metrics"]] == METRICS
    assert summary["metric_set"]["headline"] == "blend"
    assert summary["metric_set"]["scale"] == {"min": 1, "max": 5}
    assert "weighted_mean(accuracy*3, realism*1)" in summary["definitions"]["blend"]
    for table in summary["tables"]:
        assert table["metrics"] == METRICS
        assert list(table["headline"]) == METRICS
        assert all(set(METRICS) <= set(r) and not OLD & set(r) for r in table["rows"].values())
    for stats in summary["categories"].values():
        assert list(stats["metrics"]) == METRICS and stats["metrics"]["blend"]["n"] == 1
    assert list(summary["overall"]["macro"]["means"]) == METRICS

    # report.html: a column per metric, with its label; none of VIEScore's.
    html = (first / "report.html").read_text(encoding="utf-8")
    for name, label in (
        ("accuracy", "Accuracy"),
        ("realism", "Realism"),
        ("blend", "Weighted blend"),
    ):
        assert f'data-metric="{name}"' in html and label in html
    assert not any(f'data-metric="{name}"' in html for name in OLD)

    # compare: every metric of the protocol, the headline shown by default.
    out = tmp_path / "compare"
    code, stdout, stderr = finish(editbench("compare", str(first), str(second), "-o", str(out)))
    assert code == 0, stderr
    result = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in result["metrics"]] == METRICS
    assert result["metric"] == "blend"
    assert all(m["tables"][0]["micro"]["diffs"][0]["pairs"] == 3 for m in result["metrics"])
    assert "Weighted blend" in stdout
    compare_html = (out / "compare.html").read_text(encoding="utf-8")
    assert all(f'data-metric="{name}"' in compare_html for name in METRICS)
