"""A benchmark's declared reporting: GEdit-Bench's own statistics, and manifests' declarations.

The GEdit tables are checked against an independent implementation of the rules of GEdit-Bench's
calculate_statistics.py (stepfun-ai/Step1X-Edit, GEdit-Bench/): per instruction language, per
task_type the mean of SC, PQ and sqrt(SC*PQ) per item; "Average" is the unweighted mean over the
task types; the same again on the rows whose Intersection_exist is true.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.benchmarks import BenchmarkError, load_benchmark
from orchestrator.cli import app
from orchestrator.config import resolve_settings
from orchestrator.progress import NullProgress
from orchestrator.retry import RetryPolicy
from orchestrator.runner import run_benchmark
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices
from tests.support.images import image_bytes

TASKS = ("background_change", "color_alter", "subject-remove")
POLICY = RetryPolicy(job_deadline_s=600, probe_interval_s=0.01)


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def run_fake(
    benchmark: Path, out: Path, services: FakeServices | None = None, **changes: Any
) -> None:
    settings = resolve_settings(
        {
            "benchmark": str(benchmark),
            "out": out,
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
            **changes,
        },
        environ={},
    )
    services = services or FakeServices()
    asyncio.run(
        run_benchmark(
            settings, NullProgress(), transport=services.transport(), policy=POLICY, sleep=_no_sleep
        )
    )


def gedit_layout(folder: Path) -> list[dict[str, Any]]:
    """GEdit-Bench as published: capital-I Intersection_exist, en and cn, uneven task sizes.

    Some instructions make the fake judge answer unscored: those never reach GEdit's CSVs.
    """
    rows: list[dict[str, Any]] = []
    for lang in ("en", "cn"):
        for t, task in enumerate(TASKS):
            for index in range(3 + t + (lang == "cn")):
                unscored = lang == "en" and task == "color_alter" and index == 0
                rows.append(
                    {
                        "key": f"{task[:3]}{index:02d}",
                        "task_type": task,
                        "instruction": f"{lang} {task} {index}"
                        + (" unparseable" if unscored else ""),
                        "instruction_language": lang,
                        "Intersection_exist": index % 2 == 0,
                        "input_image": {"bytes": image_bytes(16, 16, seed=len(rows)), "path": None},
                    }
                )
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("task_type", pa.string()),
            ("instruction", pa.string()),
            ("instruction_language", pa.string()),
            ("Intersection_exist", pa.bool_()),
            ("input_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ]
    )
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / "train.parquet")
    return rows


def gedit_statistics(
    scores: list[dict[str, Any]], language: str, intersection: bool
) -> dict[str, tuple[float, float, float]]:
    """GEdit's rules, written from its published script: rows are (task_type, language,
    intersection_exist, sementics_score, quality_score) for every scored item."""
    semantics: dict[str, list[float]] = {}
    quality: dict[str, list[float]] = {}
    overall: dict[str, list[float]] = {}
    for row in scores:
        if row["language"] != language or (intersection and not row["intersection_exist"]):
            continue
        task = row["task_type"]
        semantics.setdefault(task, []).append(row["sc"])
        quality.setdefault(task, []).append(row["pq"])
        overall.setdefault(task, []).append(math.sqrt(row["sc"] * row["pq"]))
    table = {
        task: (
            sum(semantics[task]) / len(semantics[task]),
            sum(quality[task]) / len(quality[task]),
            sum(overall[task]) / len(overall[task]),
        )
        for task in semantics
    }
    table["Average"] = tuple(  # type: ignore[assignment]
        sum(v[i] for v in table.values()) / len(table) for i in range(3)
    )
    return table


def test_gedit_bench_is_reported_as_its_statistics_script_does(tmp_path: Path) -> None:
    rows = gedit_layout(tmp_path / "GEdit-Bench")
    out = tmp_path / "run"
    run_fake(tmp_path / "GEdit-Bench", out)

    by_id = {f"{r['task_type']}/{r['instruction_language']}/{r['key']}": r for r in rows}
    results = JsonlLog(out / "results.jsonl").read()
    assert len(results) == len(rows)
    scores = [
        {
            "task_type": by_id[r["item_id"]]["task_type"],
            "language": by_id[r["item_id"]]["instruction_language"],
            "intersection_exist": by_id[r["item_id"]]["Intersection_exist"],
            "sc": r["sc"],
            "pq": r["pq"],
        }
        for r in results
        if r["scored"]
    ]
    assert len(scores) == len(rows) - 1  # the unparseable answer is left out, not a zero

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["reporting"]["group_by"] == ["language", "category"]
    assert summary["reporting"]["subsets"] == {"intersection": "Intersection_exist"}
    tables = {t["title"]: t for t in summary["tables"]}
    assert list(tables) == [
        "cn",
        "cn · intersection (Intersection_exist)",
        "en",
        "en · intersection (Intersection_exist)",
    ]
    for language in ("en", "cn"):
        for intersection in (False, True):
            title = language + (" · intersection (Intersection_exist)" if intersection else "")
            table = tables[title]
            expected = gedit_statistics(scores, language, intersection)
            assert set(table["rows"]) == set(TASKS)
            for task in TASKS:
                got = table["rows"][task]
                assert (got["sc"]["mean"], got["pq"]["mean"], got["overall"]["mean"]) == (
                    pytest.approx(expected[task], abs=1e-5)
                )
            average = table["average"]
            assert (average["sc"], average["pq"], average["overall"]) == pytest.approx(
                expected["Average"], abs=1e-5
            )
            assert table["headline"]["overall"] == average["overall"]
    # The unscored item counts as an item of its row, not as a score.
    assert tables["en"]["rows"]["color_alter"]["items"] == 4
    assert tables["en"]["rows"]["color_alter"]["scored"] == 3

    # Every item keeps its Intersection_exist and language code as the data has them.
    plan = JsonlLog(out / "plan.jsonl").read()
    assert {p["language"] for p in plan} == {"en", "cn"}
    assert all(isinstance(p["extra"]["Intersection_exist"], bool) for p in plan)

    # results.csv carries the subset column, so the tables can be recomputed from it alone.
    with (out / "results.csv").open(encoding="utf-8", newline="") as handle:
        table_rows = list(csv.DictReader(handle))
    assert sum(r["Intersection_exist"] == "True" for r in table_rows) == sum(
        1 for r in rows if r["Intersection_exist"]
    )

    # The page and the terminal show the same tables.
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "cn · intersection (Intersection_exist)" in html
    shown = CliRunner().invoke(app, ["report", str(out)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    average = tables["cn · intersection (Intersection_exist)"]["average"]
    assert f"{average['overall']:.3f}" in shown.output
    assert "cn · intersection (Intersection_exist)" in shown.output
    assert shown.output.count("Average") >= 4


def test_lower_case_intersection_column_is_read_under_the_published_name(tmp_path: Path) -> None:
    from tests.orchestrator.test_benchmarks import gedit_table

    table, _ = gedit_table(n_per_lang=2)
    (tmp_path / "g").mkdir()
    pq.write_table(table, tmp_path / "g" / "train.parquet")
    bench = load_benchmark(tmp_path / "g")
    assert [i.extra["Intersection_exist"] for i in bench.items] == [True, False, True, False]
    assert bench.reporting.subsets == {"intersection": "Intersection_exist"}


def _team_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"{split}-{i}",
            "category": ["object", "scene"][i % 2],
            "instruction": f"{split} edit {i}",
            "difficulty": ["easy", "hard"][i // 2],
            "reasoning": "yes" if i == 0 else "no",
        }
        for split in ("a", "b")
        for i in range(4)
    ]


def test_a_yaml_manifest_declares_its_own_tables(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    write_manifest(folder, _team_rows())
    items = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    (folder / "manifest.jsonl").unlink()
    # b-1 goes unscored: easy's rows have 2 and 1 scored items, so the mean over its items (the
    # declared headline) is not the Average of its row means.
    [b1] = [item for item in items if item["id"] == "b-1"]
    b1["instruction"] += " unparseable"
    reporting = {
        "group_by": ["difficulty", "category"],
        "subsets": {"reasoning": "reasoning"},
        "headline": "micro",
    }
    manifest = folder / "bench.yaml"
    manifest.write_text(yaml.safe_dump({"reporting": reporting, "items": items}), encoding="utf-8")
    out = tmp_path / "run"
    run_fake(manifest, out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    titles = [t["title"] for t in summary["tables"]]
    assert titles == [
        "easy",
        "easy · reasoning (reasoning)",
        "hard",
        "hard · reasoning (reasoning)",
    ]
    easy = summary["tables"][0]
    assert set(easy["rows"]) == {"object", "scene"}
    assert easy["items"] == 4
    assert summary["tables"][1]["items"] == 2  # a-0 and b-0
    assert (easy["items"], easy["scored"]) == (4, 3)
    results = {r["item_id"]: r for r in JsonlLog(out / "results.jsonl").read()}
    easy_scores = [results[i]["overall"] for i in ("a-0", "a-1", "b-0")]
    assert easy["headline"]["overall"] == pytest.approx(sum(easy_scores) / 3)
    assert easy["headline"]["overall"] != pytest.approx(easy["average"]["overall"])


def test_a_sidecar_declaration_works_for_a_csv_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    write_manifest(folder, _team_rows())
    items = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    (folder / "manifest.jsonl").unlink()
    header = list(items[0])
    lines = [",".join(header)] + [",".join(str(i[h]) for h in header) for i in items]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "reporting.yaml").write_text("group_by: difficulty\n", encoding="utf-8")
    bench = load_benchmark(folder / "manifest.csv")
    assert bench.reporting.group_by == ["difficulty"]
    out = tmp_path / "run"
    run_fake(folder / "manifest.csv", out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [t["title"] for t in summary["tables"]] == ["all items"]
    assert set(summary["tables"][0]["rows"]) == {"easy", "hard"}


def test_a_declaration_naming_an_unknown_column_is_refused_at_load(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    write_manifest(folder, _team_rows())
    (folder / "reporting.yaml").write_text(
        "group_by: [language, category]\nsubsets: {hard: is_hard}\n", encoding="utf-8"
    )
    with pytest.raises(BenchmarkError, match="no item has: is_hard"):
        load_benchmark(folder)
    (folder / "reporting.yaml").write_text("headline: best\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"reporting\.headline"):
        load_benchmark(folder)


def test_a_gedit_run_folder_without_reporting_json_is_still_reported_its_way(
    tmp_path: Path,
) -> None:
    """Run folders made before reporting.json (and with intersection_exist in lower case)."""
    gedit_layout(tmp_path / "GEdit-Bench")
    out = tmp_path / "run"
    run_fake(tmp_path / "GEdit-Bench", out)
    before = json.loads((out / "summary.json").read_text(encoding="utf-8"))["tables"]
    (out / "reporting.json").unlink()
    plan = JsonlLog(out / "plan.jsonl").read()
    for row in plan:
        row["extra"]["intersection_exist"] = row["extra"].pop("Intersection_exist")
    (out / "plan.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in plan), encoding="utf-8"
    )
    shown = CliRunner().invoke(app, ["report", str(out)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    after = json.loads((out / "summary.json").read_text(encoding="utf-8"))["tables"]
    assert after == before
