"""KRIS-Bench, ImgEdit and RISEBench, each in its published layout, through ``editbench run`` on
both real services (tiny models, CPU): the official tables in summary.json, the terminal,
report.html and ``editbench compare`` equal the authors' statistics re-implemented in
tests/orchestrator/test_published_benchmarks.py, over the per-item scores the run recorded."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import JsonlLog
from tests.orchestrator.harness import editbench, finish
from tests.orchestrator.hub_layouts import write_imgedit_lmms
from tests.orchestrator.published_layouts import (
    IMGEDIT_BASIC,
    write_imgedit,
    write_kris,
    write_rise,
)
from tests.orchestrator.test_published_benchmarks import (
    KRIS_WITH_KP,
    kris_summarize,
    rise_gpt_eval,
)
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny

# Judging protocols whose questions carry the dimension names the statistics read (the scale
# and prompts do not matter to this test: it checks that what the judge said reaches the
# official tables exactly as the authors' scripts would compute them). KRIS's and RISE's ask
# each category its own questions (question_sets), as the built-in kris and rise do, so one run
# covers every category; expected mode, so the tiny judge always answers.
_PROTOCOL = """name: {name}
description: dimensions of {name} (test)
combine: viescore
answer:
  expected: Answer with one integer from 0 to 10 and nothing else.
  generate: 'End with "Score: N".'
questions:
{questions}
"""

KRIS_KNOWLEDGE_TASKS = [
    "abstract_reasoning", "mathematics", "practical_knowledge", "medicine",
    "rule-based_reasoning", "biology", "geography", "chemistry", "humanities", "physics",
]  # fmt: skip

_KRIS = """name: kris-dims
description: KRIS-Bench's dimensions, knowledge on the knowledge tasks only (test)
scale: {min: 1, max: 5}
answer: {expected: Answer with one integer from 1 to 5 and nothing else.}
questions:
  - {name: consistency, images: [source, edited], prompt: "Consistency of {instruction}?"}
  - {name: instruction, images: [source, edited], prompt: "Instruction: {instruction}?"}
  - {name: knowledge, images: [source, edited], prompt: "Knowledge in {instruction}?"}
  - {name: quality, images: [edited], prompt: "Quality?"}
metrics:
  - {name: consistency, label: VC, score: consistency}
  - {name: instruction, label: IF, score: instruction}
  - {name: knowledge, label: KP, score: knowledge}
  - {name: quality, label: VQ, score: quality}
  - {name: overall, label: Mean, mean: [consistency, instruction, knowledge, quality]}
headline: overall
question_sets:
  knowledge:
    categories: [TASKS]
    questions: [consistency, instruction, knowledge, quality]
  common:
    questions: [consistency, instruction, quality]
""".replace("TASKS", ", ".join(KRIS_KNOWLEDGE_TASKS))

_RISE = """name: rise-dims
description: RISEBench's dimensions, logical puzzles 0/1 without plausibility (test)
scale: {min: 0, max: 5}
answer: {expected: Answer with one integer and nothing else.}
questions:
  - {name: consistency, images: [source, edited], prompt: "C", scale: {min: 1, max: 5}}
  - {name: reasoning, images: [edited], prompt: "R {instruction}", scale: {min: 1, max: 5}}
  - {name: plausibility, images: [edited], prompt: "P", scale: {min: 1, max: 5}}
  - {name: logical_consistency, images: [source, edited], prompt: "LC", scale: {min: 0, max: 1}}
  - {name: logical_reasoning, images: [edited], prompt: "LR {instruction}", scale: {min: 0, max: 1}}
metrics:
  - {name: consistency, label: C, score: consistency}
  - {name: reasoning, label: R, score: reasoning}
  - {name: plausibility, label: P, score: plausibility}
  - {name: weighted, label: W, weighted_mean: {consistency: 0.3, reasoning: 0.5, plausibility: 0.2}}
  - {name: logical_consistency, label: LC, score: logical_consistency}
  - {name: logical_reasoning, label: LR, score: logical_reasoning}
headline: weighted
question_sets:
  logical:
    categories: [logical_reasoning]
    questions: [logical_consistency, logical_reasoning]
  reasoning:
    questions: [consistency, reasoning, plausibility]
"""


def _protocol(name: str, sc: list[str], pq: list[str]) -> str:
    lines = []
    for group, names in (("sc", sc), ("pq", pq)):
        for question in names:
            images = "[source, edited]" if group == "sc" else "[edited]"
            lines.append(
                f"  - name: {question}\n    group: {group}\n    images: {images}\n"
                f'    prompt: "Instruction: {{instruction}}. Rate the {question}."'
            )
    return _PROTOCOL.format(name=name, questions="\n".join(lines))


@pytest.fixture(scope="module")
def services(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("published-services")
    protocols = folder / "protocols"
    protocols.mkdir()
    imgedit = _protocol("imgedit-dims", ["adherence", "preservation"], ["quality"])
    (protocols / "imgedit-dims.yaml").write_text(imgedit, encoding="utf-8")
    (protocols / "kris-dims.yaml").write_text(_KRIS, encoding="utf-8")
    (protocols / "rise-dims.yaml").write_text(_RISE, encoding="utf-8")
    # The Edit Plus family: KRIS-Bench's multi-input items are edited with all their inputs (a
    # single-input editor records them as not edited: test_multi_image_tiny.py).
    editor = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": "tiny-plus",
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
            "REWARD_MAX_WAIT_S": "0.05",
            **REUSE_FREED_MEMORY,
        },
        folder / "reward.log",
    )
    with editor.running(), reward.running():
        yield editor.url, reward.url


def _run(services: tuple[str, str], benchmark: Path | str, protocol: str, out: Path) -> str:
    editor, reward = services
    code, stdout, stderr = finish(
        editbench(
            "run",
            "--benchmark",
            str(benchmark),
            "--protocol",
            protocol,
            "--out",
            str(out),
            "--editor-url",
            editor,
            "--reward-url",
            reward,
            "--steps",
            "2",
            "--size",
            "32x32",
        )
    )
    assert code == 0, stderr
    return stdout


def _scores(out: Path) -> list[dict[str, Any]]:
    rows = JsonlLog(out / "results.jsonl").read()
    assert rows and all(r["score_status"] == "ok" for r in rows)
    for row in rows:
        row["by_name"] = {q["name"]: q["score"] for q in row["questions"]}
    return rows


def _official(out: Path) -> dict[str, Any]:
    official = json.loads((out / "summary.json").read_text(encoding="utf-8"))["official"]
    assert isinstance(official, dict)
    return official


def _table(official: dict[str, Any], title: str) -> dict[str, list[float | None]]:
    table = next(t for t in official["tables"] if t["title"] == title)
    return {row["label"]: row["values"] for row in table["rows"]}


def _shown(out: Path, stdout: str, official: dict[str, Any], tmp_path: Path) -> None:
    """The terminal, report.html and compare show the official tables and headline."""
    assert "(official)" in stdout
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Official statistics" in html and official["headline_label"] in html
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    folder = tmp_path / "compared"
    code, printed, stderr = finish(editbench("compare", str(out), str(twin), "--out", str(folder)))
    assert code == 0, stderr
    assert "Official headline" in printed
    result = json.loads((folder / "compare.json").read_text(encoding="utf-8"))
    assert [o["headline"] for o in result["official"]] == [official["headline"]] * 2
    assert "Official headline" in (folder / "compare.html").read_text(encoding="utf-8")


def test_kris_bench_runs_end_to_end_with_its_official_tables(
    services: tuple[str, str], tmp_path: Path
) -> None:
    """Every task in one run: the knowledge tasks asked for knowledge, the others not (absent,
    not zero), and the official tables over all of them."""
    bench = write_kris(tmp_path / "data")
    out = tmp_path / "kris-run"
    stdout = _run(services, bench, "kris-dims", out)
    rows = _scores(out)
    results: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    knowledge_items = 0
    for row in rows:
        extra = row["extra"]
        keys = ["consistency", "instruction", "quality"]
        knowledge = extra["dimension"] in KRIS_WITH_KP
        assert (row["category"] in KRIS_KNOWLEDGE_TASKS) == knowledge
        if knowledge:
            keys.append("knowledge")
            knowledge_items += 1
        # asked exactly its set's questions; a metric it was not asked for is absent
        assert sorted(row["by_name"]) == sorted(keys)
        assert ("knowledge" in row["metrics"]) == knowledge
        results[row["category"]][extra["image_id"]] = {
            f"{k}_score": row["by_name"][k] for k in keys
        }
    assert 0 < knowledge_items < len(rows)
    want = kris_summarize(results)
    official = _official(out)
    assert not any("--protocol" in note for note in official["notes"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["overall"]["micro"]["metrics"]["knowledge"]["n"] == knowledge_items
    assert summary["overall"]["micro"]["metrics"]["consistency"]["n"] == len(rows)
    assert official["headline"] == pytest.approx(want["summary"]["Overall"]["AVG"])
    types = _table(official, "KRIS-Bench knowledge types")
    for label, values in types.items():
        assert values[0] == pytest.approx(want["summary"][label]["AVG"])
    dims = _table(official, "KRIS-Bench reasoning dimensions")
    for label, values in dims.items():
        assert values[-1] == pytest.approx(want["summary"][label]["AVG"])
        assert values[0] == pytest.approx(want["summary"][label]["consistency_score"])
    _shown(out, stdout, official, tmp_path)


def test_imgedit_runs_end_to_end_with_its_official_tables(
    services: tuple[str, str], tmp_path: Path
) -> None:
    bench = write_imgedit(tmp_path / "data", "basic")
    out = tmp_path / "imgedit-run"
    _run(services, bench, "imgedit-dims", out)
    _imgedit_tables_are_the_authors(out)


def test_imgedit_from_the_hub_cache_runs_end_to_end_with_its_official_tables(
    services: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--benchmark kcz358/imgedit`` (lmms-eval's table) from a pre-filled hub cache."""
    cache = tmp_path / "hub"
    write_imgedit_lmms(cache, write_imgedit(tmp_path / "data", "basic"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "imgedit-hub-run"
    _run(services, "kcz358/imgedit", "imgedit-dims", out)
    assert len(_scores(out)) == len(IMGEDIT_BASIC)
    _imgedit_tables_are_the_authors(out)


def _imgedit_tables_are_the_authors(out: Path) -> None:
    rows = _scores(out)
    # step1 (on the recorded numbers), step2, and the mean of the edit types
    per_item = {
        r["item_id"]: round(sum(r["by_name"].values()) / len(r["by_name"]), 2) for r in rows
    }
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_type[r["category"]].append(per_item[r["item_id"]])
    types = {t: round(sum(v) / len(v), 2) for t, v in by_type.items()}
    official = _official(out)
    table = _table(official, "ImgEdit edit types")
    assert {k: v[0] for k, v in table.items() if k != "Overall"} == types
    assert official["headline"] == round(sum(types.values()) / len(types), 2)


def test_risebench_runs_end_to_end_with_its_official_tables(
    services: tuple[str, str], tmp_path: Path
) -> None:
    bench = write_rise(tmp_path / "data")
    out = tmp_path / "rise-run"
    _run(services, bench, "rise-dims", out)
    rows = _scores(out)
    authors = []
    for r in rows:
        s = r["by_name"]
        free = bool(r["extra"].get("consistency_free"))
        if r["category"] == "logical_reasoning":  # its own 0/1 questions, no plausibility
            assert sorted(s) == ["logical_consistency", "logical_reasoning"]
            assert all(0 <= v <= 1 for v in s.values())
            scores = [s["logical_consistency"], s["logical_reasoning"]]
        else:
            assert sorted(s) == ["consistency", "plausibility", "reasoning"]
            scores = [None if free else s["consistency"], s["reasoning"], s["plausibility"]]
        row: dict[str, Any] = {"category": r["category"], "scores": scores}
        if free:
            row["consistency_free"] = True
        authors.append(row)
    want = rise_gpt_eval(authors)
    official = _official(out)
    for label, values in _table(official, "RISEBench").items():
        assert values == pytest.approx(want[label], nan_ok=True)
    assert official["headline"] == pytest.approx(100 * want["Overall"][2])
    # one run: every category in the tables
    assert set(_table(official, "RISEBench")) == {"Overall", "Temporal", "Causal", "Spatial",
                                                   "Logical"}  # fmt: skip
    assert not any("--protocol" in note for note in official["notes"])
