"""KRIS-Bench, ImgEdit and RISEBench load unchanged from their published layouts, and their
official statistics equal independent re-implementations of the authors' scripts (written here
from those scripts: ImgEdit's step1/step2, BAGEL's KRIS summarize.py, RISEBench's gpt_eval.py),
whether the benchmark was read from the authors' layout or the hub's (hub_layouts.py)."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from orchestrator.benchmarks import BenchmarkError, FolderBenchmark, load_benchmark
from orchestrator.benchmarks.rise import judge_variant as rise_judge_variant
from orchestrator.benchmarks.rise import rise_items
from orchestrator.benchmarks.statistics import (
    JudgedItem,
    imgedit_statistics,
    kris_statistics,
    official_statistics,
    rise_statistics,
)
from orchestrator.preflight import unofficial_protocol
from tests.orchestrator.hub_layouts import write_imgedit_lmms, write_kris_lmms, write_rise_hub
from tests.orchestrator.published_layouts import (
    IMGEDIT_BASIC,
    KRIS_ROWS,
    RISE_ROWS,
    write_imgedit,
    write_kris,
    write_rise,
)
from tests.support.images import image_bytes

# --- loading ---------------------------------------------------------------------------------


def test_kris_bench_loads_every_task_with_its_dimension_inputs_and_reference(
    tmp_path: Path,
) -> None:
    root = write_kris(tmp_path)
    for spec in (tmp_path, root):
        bench = load_benchmark(spec)
        assert isinstance(bench, FolderBenchmark) and bench.format == "kris"
        assert len(bench.items) == len(KRIS_ROWS)
    items = {i.id: i for i in bench.items}
    multi = items["multi-element_composition/21"]
    assert multi.source == "multi-element_composition/21-1.jpg"
    assert multi.extra["input_images"] == [
        "multi-element_composition/21-2.jpg",
        "multi-element_composition/21-3.jpg",
    ]
    assert multi.extra["dimension"] == "Instruction Decomposition"
    assert multi.extra["knowledge_type"] == "Procedural Knowledge"
    view = items["viewpoint_change/3"]
    assert view.extra["reference_image"] == "viewpoint_change/3-gt.jpg"
    assert items["chemistry/7"].extra["explanation"] == "why chemistry 7"
    assert items["chemistry/7"].hints == "why chemistry 7"  # the official judge reads it
    assert items["chemistry/7"].extra["knowledge_type"] == "Conceptual Knowledge"
    extra = bench.extra_images(multi)
    assert extra["input_images"] == [
        (root / "multi-element_composition" / n).read_bytes() for n in ("21-2.jpg", "21-3.jpg")
    ]
    assert bench.extra_images(view)["reference_image"] == [
        (root / "viewpoint_change" / "3-gt.jpg").read_bytes()
    ]
    streamed = dict(bench.iter_images(bench.items))
    assert streamed[items["color_change/2"]] == (root / "color_change" / "2.png").read_bytes()
    assert bench.reporting.statistics == "kris"
    # What the edit and the judge are sent beside the first input (in order).
    assert bench.input_count(multi) == 3 and bench.input_images(multi) == extra["input_images"]
    assert bench.reference_image(view) == (root / "viewpoint_change" / "3-gt.jpg").read_bytes()
    assert bench.input_count(view) == 1 and bench.input_images(view) == []
    # metrics_temporal_prediction.py's layout: frames 1-3 given, frame 4 to predict.
    assert items["temporal_prediction/4"].extra["judge_variant"] == "frame_4"
    assert "judge_variant" not in multi.extra


def test_imgedit_basic_and_uge_load_with_their_keys_as_ids(tmp_path: Path) -> None:
    basic = load_benchmark(write_imgedit(tmp_path, "basic"))
    assert basic.format == "imgedit" and basic.name == "ImgEdit-Basic"
    assert [i.id for i in basic.items] == list(IMGEDIT_BASIC)
    item = basic.items[0]
    assert item.category == "adjust" and item.source == "animal/000342021.jpg"
    assert item.instruction == "Change the shell."
    assert basic.reporting.statistics == "imgedit" and basic.reporting.headline == "macro"
    data = dict(basic.iter_images([item]))[item]
    assert data == (tmp_path / "Basic" / "singleturn" / "animal" / "000342021.jpg").read_bytes()
    uge_bench = load_benchmark(write_imgedit(tmp_path, "uge") / "UGE_edit.json")
    assert uge_bench.name == "ImgEdit-UGE" and {i.category for i in uge_bench.items} == {"uge"}


def test_risebench_loads_its_references_and_flags(tmp_path: Path) -> None:
    bench = load_benchmark(write_rise(tmp_path))
    assert bench.format == "rise" and len(bench.items) == len(RISE_ROWS)
    items = {i.id: i for i in bench.items}
    assert set(items) == {f"{r['category']}/{r['index']}" for r in RISE_ROWS}
    logical = items["logical_reasoning/logical_reasoning_1"]
    assert logical.extra["reference_kind"] == "image"
    assert logical.extra["reference_image"] == "logical_reasoning_images/1_ref.png"
    assert isinstance(bench, FolderBenchmark)
    assert bench.extra_images(logical)["reference_image"] == [
        (tmp_path / "data" / "logical_reasoning_images" / "1_ref.png").read_bytes()
    ]
    text = items["logical_reasoning/logical_reasoning_2"]
    assert text.extra["reference"] == "The path goes 1-2-4."
    assert text.extra["reference_kind"] == "text"
    assert text.hints == "The path goes 1-2-4."  # the official judge reads it
    assert logical.hints is None
    assert items["causal_reasoning/causal_reasoning_2"].extra["consistency_free"] is True
    assert items["temporal_reasoning/temporal_reasoning_1"].extra["reference"] == "Rotten."
    # The variants of the rise protocol's questions, as eval_vanilla branches.
    assert logical.extra["judge_variant"] == "reference_image"
    spatial = items["spatial_reasoning/spatial_reasoning_2"]
    assert spatial.extra["judge_variant"] == "reference_image"
    assert "judge_variant" not in text.extra
    assert "judge_variant" not in items["spatial_reasoning/spatial_reasoning_1"].extra
    assert rise_judge_variant("temporal_reasoning", {"reasoning_img": "x.png"}) == "input"
    assert rise_judge_variant("spatial_reasoning", {"reasoning_img": 1}) == "spatial_input"
    assert rise_judge_variant("temporal_reasoning", {"reference_kind": "image"}) is None
    # eval_vanilla's `'reasoning_wo_ins' in item` tests a pandas row: the column, which every
    # row has once any row of the file has the key.
    rows = json.loads((tmp_path / "data" / "data_total.json").read_text(encoding="utf-8"))
    rows[0]["reasoning_wo_ins"] = None
    flagged = {i.id: i for i in rise_items(rows, tmp_path / "data" / "data_total.json")}
    assert flagged[logical.id].extra["judge_variant"] == "reference_image_wo_ins"
    assert flagged[spatial.id].extra["judge_variant"] == "reference_image"


def test_a_missing_image_or_one_outside_the_folder_is_named(tmp_path: Path) -> None:
    root = write_kris(tmp_path)
    (root / "chemistry" / "7.jpg").unlink()
    with pytest.raises(BenchmarkError, match=r"chemistry/7.*image not found"):
        load_benchmark(root)
    write_imgedit(tmp_path / "img", "basic")
    index = tmp_path / "img" / "Basic" / "basic_edit.json"
    data = json.loads(index.read_text())
    (tmp_path / "secret.jpg").write_bytes(image_bytes(8, 8, seed=1))
    data["1082"]["id"] = "../../../secret.jpg"
    index.write_text(json.dumps(data))
    with pytest.raises(BenchmarkError, match="leads outside"):
        load_benchmark(index)


def test_an_unknown_kris_task_is_refused_listing_the_known(tmp_path: Path) -> None:
    root = write_kris(tmp_path)
    (root / "color_change").rename(root / "colour_change")
    with pytest.raises(BenchmarkError, match=r"colour_change.*not one of KRIS-Bench's 22"):
        load_benchmark(root)


# --- independent re-implementations of the authors' statistics ------------------------------
# Each over the authors' layout and over the hub's (lmms-eval's tables, RISEBench's data.zip).
LAYOUTS = ("authors", "hub")


def imgedit_step1(entry: str) -> float | None:
    """ImgEdit Benchmark/Basic/step1_get_avgscore.py, extract_scores_and_average."""
    scores = []
    for line in entry.splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].isdigit():
            scores.append(int(parts[1]))
    return round(sum(scores) / len(scores), 2) if scores else None


def imgedit_step2(score_dict: dict[str, float], meta: dict[str, Any]) -> dict[str, float]:
    """step2_typescore.py, compute_edit_type_averages."""
    by_type: dict[str, list[float]] = defaultdict(list)
    for key, score in score_dict.items():
        edit_type = meta.get(key, {}).get("edit_type")
        if edit_type is not None:
            by_type[edit_type].append(score)
    return {t: round(sum(s) / len(s), 2) for t, s in by_type.items() if s}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imgedit_statistics_equal_the_authors_steps(tmp_path: Path, layout: str) -> None:
    basic = write_imgedit(tmp_path, "basic")
    bench = load_benchmark(basic if layout == "authors" else write_imgedit_lmms(tmp_path, basic))
    rng = random.Random(7)
    answers, judged = {}, []
    for item in bench.items:
        a, q, p = (rng.randint(1, 5) for _ in range(3))
        answers[item.id] = (
            f"Brief reasoning: fine.\nPrompt Compliance: {a}\nVisual Naturalness: {q}\n"
            f"Physical & Detail Integrity: {p}"
        )
        metrics = {"adherence": float(a), "quality": float(q), "preservation": float(p)}
        judged.append(JudgedItem(item.id, item.category, item.extra, metrics))
    averages = {k: v for k, text in answers.items() if (v := imgedit_step1(text)) is not None}
    types = imgedit_step2(averages, IMGEDIT_BASIC)
    stats = imgedit_statistics(judged)
    table = stats.table("ImgEdit edit types")
    assert {r.label: r.values[0] for r in table.rows if r.label != "Overall"} == types
    assert stats.headline == round(sum(types.values()) / len(types), 2)


def test_imgedit_uge_headline_is_the_mean_over_items(tmp_path: Path) -> None:
    bench = load_benchmark(write_imgedit(tmp_path, "uge"))
    judged = [
        JudgedItem(i.id, i.category, i.extra, {"adherence": float(n + 2)})
        for n, i in enumerate(bench.items)
    ]
    # get_average_score.py: each item's (rounded) mean, then their mean rounded to 2
    assert imgedit_statistics(judged).headline == round((2 + 3 + 4) / 3, 2)
    # as the built-in imgedit-uge protocol answers: one score named overall
    judged = [
        JudgedItem(i.id, i.category, i.extra, {"overall": float(n + 3)})
        for n, i in enumerate(bench.items)
    ]
    assert imgedit_statistics(judged).headline == round((3 + 4 + 5) / 3, 2)


KRIS_TYPE = {
    "Attribute Perception": ["count_change", "color_change", "size_adjustment",
                             "part_completion", "anomaly_correction"],
    "Spatial Perception": ["viewpoint_change", "position_movement"],
    "Temporal Prediction": ["temporal_prediction"],
    "Social Science": ["humanities", "practical_knowledge"],
    "Natural Science": ["biology", "chemistry", "geography", "medicine", "mathematics",
                        "physics"],
    "Logical Reasoning": ["abstract_reasoning", "rule-based_reasoning"],
    "Instruction Decomposition": ["multi-element_composition", "multi-instruction_execution"],
}  # fmt: skip
KRIS_WITH_KP = {"Social Science", "Natural Science", "Logical Reasoning"}
KRIS_META = {
    "Factual Knowledge": ["Attribute Perception", "Spatial Perception", "Temporal Prediction"],
    "Conceptual Knowledge": ["Social Science", "Natural Science"],
    "Procedural Knowledge": ["Logical Reasoning", "Instruction Decomposition"],
}


def kris_summarize(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """BAGEL eval/gen/kris/summarize.py (ByteDance-Seed/Bagel@a53eea0) over {task: metrics.json}."""
    base = ["consistency_score", "quality_score", "instruction_score"]
    type_scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    flat: dict[str, list[float]] = defaultdict(list)
    subitems: dict[str, dict[str, float]] = {}
    for b_type, tasks in KRIS_TYPE.items():
        metrics = base + (["knowledge_score"] if b_type in KRIS_WITH_KP else [])
        for task in tasks:
            if task not in results:
                continue
            sub: dict[str, list[float]] = {m: [] for m in metrics}
            for sample in results[task].values():
                for m in metrics:
                    if sample.get(m) is not None:
                        norm = (sample[m] - 1) * 25
                        sub[m].append(norm)
                        type_scores[b_type][m].append(norm)
                        flat[b_type].append(norm)
            subitems[task] = {m: sum(v) / len(v) for m, v in sub.items() if v}
    summary: dict[str, dict[str, float]] = {}
    for b_type in KRIS_TYPE:
        if flat[b_type]:
            row = {m: sum(v) / len(v) for m, v in type_scores[b_type].items() if v}
            row["AVG"] = sum(flat[b_type]) / len(flat[b_type])
            summary[b_type] = row
    for meta, children in KRIS_META.items():
        vals = [v for c in children for v in flat[c]]
        if vals:
            summary[meta] = {"AVG": sum(vals) / len(vals)}
    everything = [v for b in KRIS_TYPE for v in flat[b]]
    summary["Overall"] = {"AVG": sum(everything) / len(everything)}
    return {"summary": summary, "subitems": subitems}


def test_kris_statistics_give_bagels_published_figure_after_its_normalization_fix() -> None:
    """ByteDance-Seed/Bagel@a53eea0 ("fix KRIS normalization") changed summarize.py from
    s / 5 * 100 to (s - 1) * 25 and re-made EVAL.md: BAGEL's Attribute Perception VC went from
    81.31 to 76.64, the same answers (mean 4.0655) on either scale. 2000 answers of that mean
    must give the published 76.64, not 81.31."""
    answers = [5] * 131 + [4] * 1869  # mean 8131 / 2000 = 4.0655
    judged = [
        JudgedItem(
            f"c{n}",
            "color_change",
            {"dimension": "Attribute Perception"},
            {"consistency": score, "quality": 3, "instruction": 3},
        )
        for n, score in enumerate(answers)
    ]
    dims = kris_statistics(judged).table("KRIS-Bench reasoning dimensions")
    row = dims.row("Attribute Perception")
    vc = row.values[dims.columns.index("VC")]
    assert vc is not None and round(vc, 2) == 76.64


@pytest.mark.parametrize("layout", LAYOUTS)
def test_kris_statistics_equal_bagels_summarize(tmp_path: Path, layout: str) -> None:
    root = write_kris(tmp_path)
    bench = load_benchmark(root if layout == "authors" else write_kris_lmms(tmp_path, root))
    rng = random.Random(3)
    results: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    judged = []
    for item in bench.items:
        knowledge = item.extra["dimension"] in KRIS_WITH_KP
        sample: dict[str, Any] = {
            "consistency_score": rng.randint(1, 5),
            "instruction_score": rng.choice([1, 2, 3, 4, 5, None]),  # a parse failure: None
            "quality_score": rng.randint(1, 5),
        }
        if knowledge:
            sample["knowledge_score"] = rng.randint(1, 5)
        results[item.category][item.extra["image_id"]] = sample
        metrics = {k.removesuffix("_score"): v for k, v in sample.items()}
        judged.append(JudgedItem(item.id, item.category, item.extra, metrics))
    expected = kris_summarize(results)
    stats = kris_statistics(judged)
    short = {"VC": "consistency_score", "VQ": "quality_score", "IF": "instruction_score",
             "KP": "knowledge_score"}  # fmt: skip
    dims = stats.table("KRIS-Bench reasoning dimensions")
    for row in dims.rows:
        want = expected["summary"][row.label]
        got = {c: v for c, v in zip(dims.columns, row.values, strict=True) if v is not None}
        assert set(got) == {next((s for s, m in short.items() if m == k), k) for k in want}
        for column, value in got.items():
            assert value == pytest.approx(want[short.get(column, column)])
    types = stats.table("KRIS-Bench knowledge types")
    for row in types.rows:
        assert row.values[0] == pytest.approx(expected["summary"][row.label]["AVG"])
    tasks = stats.table("KRIS-Bench tasks")
    for row in tasks.rows:
        got = {c: v for c, v in zip(tasks.columns, row.values, strict=True) if v is not None}
        want = dict(expected["subitems"][row.label].items())
        assert {short[c]: v for c, v in got.items()} == pytest.approx(want)
    assert stats.headline == pytest.approx(expected["summary"]["Overall"]["AVG"])
    # The kris protocol judges multi-input and ground-truth items officially; a temporal item
    # whose frames are not laid out as the script lays them out is named.
    assert not any("temporal" in note for note in stats.notes)
    unlaid = [
        JudgedItem(i.item_id, i.category, {**i.extra, "judge_variant": None}, i.metrics)
        for i in judged
    ]
    assert any(
        note.startswith("1 temporal_prediction item(s)") for note in kris_statistics(unlaid).notes
    )
    # One run judged with the one `kris` protocol (knowledge only where its set asks it) needs no
    # note; answers without a dimension the tables need (a protocol that is not KRIS's) get one.
    assert not any("--protocol" in note for note in official_statistics("kris", judged).notes)
    without_kp = [
        JudgedItem(i.item_id, i.category, i.extra, {**i.metrics, "knowledge": None}) for i in judged
    ]
    assert not any("--protocol" in note for note in official_statistics("kris", without_kp).notes)
    absent_kp = [
        JudgedItem(i.item_id, i.category, i.extra, {k: v for k, v in i.metrics.items()
                                                   if k != "knowledge"})
        for i in judged
    ]  # fmt: skip
    [note] = [n for n in official_statistics("kris", absent_kp).notes if "--protocol" in n]
    assert "no knowledge for " in note and "--protocol kris" in note
    knowledge_tasks = {i.category for i in judged if i.extra["dimension"] in KRIS_WITH_KP}
    assert all(task in note for task in knowledge_tasks)
    assert "color_change" not in note
    # Every row the reference prints was compared above (the loops ran over all of them).
    shown = {row.label for table in (dims, types) for row in table.rows}
    assert shown | {"Overall"} == set(expected["summary"])
    assert {row.label for row in tasks.rows} == set(expected["subitems"])


RISE_NAMES = ("consistency", "reasoning", "plausibility")


def rise_gpt_eval(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """RISEBench gpt_eval.py's main() after judging, with pandas' NaN rules by hand: scores is
    per item the parsed list (None: a failed match), as its extract() leaves them."""
    nan = float("nan")
    data = []
    for row in rows:
        score = row["scores"]
        out = dict(row)
        if score:
            if len(score) == 3:
                c, r, p = score
            else:
                c, r, p = 4 * min(score[0], 1) + 1, 4 * min(score[1], 1) + 1, None
        else:
            c = r = p = None
        out.update(
            ApprConsistency=nan if c is None else c,
            Reasoning=nan if r is None else r,
            VisualPlausibility=nan if p is None else p,
        )
        data.append(out)
    columns = {key for row in rows for key, value in row.items() if value is not None}
    for row in data:  # calculate_score
        # `'consistency_free' in row and row['consistency_free']` on a DataFrame row: the
        # column exists once any row has a value; a missing or null cell is NaN, and NaN is true.
        cell = nan if row.get("consistency_free") is None else row["consistency_free"]
        if row["category"] in ("temporal_reasoning", "causal_reasoning", "spatial_reasoning"):
            if "consistency_free" in columns and cell:
                s = 0.2 * row["VisualPlausibility"] + 0.8 * row["Reasoning"]
            else:
                s = (
                    0.3 * row["ApprConsistency"]
                    + 0.5 * row["Reasoning"]
                    + 0.2 * row["VisualPlausibility"]
                )
        else:
            s = 0.3 * row["ApprConsistency"] + 0.7 * row["Reasoning"]
        if row["Reasoning"] == 1:
            s = s * 0.5
            s = 1 if s < 1 else s
        row["score"] = s
        free = row.get("consistency_free") is not None
        if row["category"] == "logical_reasoning":
            done = row["ApprConsistency"] == 5 and row["Reasoning"] == 5
        elif free:
            done = row["Reasoning"] == 5 and row["VisualPlausibility"] == 5
        else:
            done = (
                row["ApprConsistency"] == 5
                and row["Reasoning"] == 5
                and row["VisualPlausibility"] == 5
            )
        row["complete"] = 1 if done else 0

    def mean(values: list[float]) -> float:
        known = [v for v in values if not math.isnan(v)]
        return sum(known) / len(known) if known else nan

    def pct(s: float) -> float:
        return 25 * (s - 1)

    final: dict[str, list[float]] = {}
    groups = {"Overall": data}
    for category, label in (
        ("temporal_reasoning", "Temporal"),
        ("causal_reasoning", "Causal"),
        ("spatial_reasoning", "Spatial"),
        ("logical_reasoning", "Logical"),
    ):
        groups[label] = [r for r in data if r["category"] == category]
    for label, group in groups.items():
        s = mean([float(r["score"]) for r in group])
        final[label] = [s, pct(s), mean([float(r["complete"]) for r in group])]
        for dim in ("Reasoning", "ApprConsistency", "VisualPlausibility"):
            final[f"{label}_{dim}"] = [pct(mean([float(r[dim]) for r in group]))]
    return final


@pytest.mark.parametrize("protocol", ["rise", "rise-logical"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rise_statistics_equal_gpt_eval(tmp_path: Path, layout: str, protocol: str) -> None:
    """One run judged with `rise` (logical puzzles answer logical_consistency and
    logical_reasoning) or, as older runs did, with `rise-logical` (plain names)."""
    authors = write_rise(tmp_path)
    bench = load_benchmark(authors if layout == "authors" else write_rise_hub(tmp_path, authors))
    rng = random.Random(11)
    rows, judged = [], []
    for n, item in enumerate(bench.items):
        logical = item.category == "logical_reasoning"
        free = bool(item.extra.get("consistency_free"))
        if logical:
            scores: list[int] | None = [rng.randint(0, 1), rng.randint(0, 1)]
        else:
            scores = [rng.choice([1, 5]), rng.choice([1, 4, 5]), rng.choice([3, 5])]
        if n == 1:
            scores = None  # the judge's answer did not parse
        row: dict[str, Any] = {"category": item.category, "scores": scores}
        metrics: dict[str, float | None] = {}
        if scores is not None:
            if free:
                scores[0] = 0  # never read: the consistency judge is not asked
                row["scores"] = [None, scores[1], scores[2]]
            names = ("consistency", "reasoning") if logical else RISE_NAMES
            if logical and protocol == "rise":
                names = ("logical_consistency", "logical_reasoning")
            metrics = {k: float(v) for k, v in zip(names, scores, strict=False)}
            if free:
                metrics.pop("consistency")
        if free:
            row["consistency_free"] = True
        rows.append(row)
        judged.append(JudgedItem(item.id, item.category, item.extra, metrics))
    want = rise_gpt_eval(rows)
    stats = rise_statistics(judged)
    main = stats.table("RISEBench")
    for row_stat in main.rows:
        for got, expected in zip(row_stat.values, want[row_stat.label], strict=True):
            assert got == pytest.approx(expected, nan_ok=True)
    dims = stats.table("RISEBench dimensions (0-100)")
    for row_stat in dims.rows:
        for column, got in zip(dims.columns, row_stat.values, strict=True):
            expected = want[f"{row_stat.label}_{column}"][0]
            if math.isnan(expected):
                assert got is None
            else:
                assert got == pytest.approx(expected)
    assert stats.headline == pytest.approx(100 * want["Overall"][2])
    # Reference-image items are judged against their reference (the rise protocol's variants).
    assert not stats.notes
    assert main.rows and dims.rows  # the loops above compared something
    assert {row.label for row in main.rows} <= set(want)
    assert [r.label for r in main.rows] == ["Overall", "Temporal", "Causal", "Spatial", "Logical"]


def test_a_kris_or_rise_run_judged_with_another_protocol_is_told_so(tmp_path: Path) -> None:
    """viescore on KRIS-Bench or RISEBench: the tables cannot be the official ones, and the
    statistics' notes say why and what to run (the preflight says the same before any edit)."""
    for name, bench in (
        ("kris", load_benchmark(write_kris(tmp_path / "k"))),
        ("rise", load_benchmark(write_rise(tmp_path / "r"))),
    ):
        judged = [
            JudgedItem(i.id, i.category, i.extra, {"sc": 7.0, "pq": 6.0, "overall": 6.5})
            for i in bench.items
        ]
        notes = official_statistics(name, judged).notes  # type: ignore[arg-type]
        [note] = [n for n in notes if "--protocol" in n]
        assert note.startswith("the run's judge protocol cannot produce ")
        assert f"--protocol {name} (every category in one run)" in note
        assert "official statistics" in note and "no consistency" in note


def test_preflight_names_a_protocol_that_cannot_give_the_official_tables(tmp_path: Path) -> None:
    """Against the protocols the judge lists: the one `kris` and `rise` protocols give every
    dimension for every category of one run; the superseded split ones and viescore do not."""
    from reward_service.protocols import ProtocolRegistry

    registry = ProtocolRegistry.load()
    for name, bench in (
        ("kris", load_benchmark(write_kris(tmp_path / "k"))),
        ("rise", load_benchmark(write_rise(tmp_path / "r"))),
    ):
        items = [(i.category, i.extra) for i in bench.items]
        assert unofficial_protocol(registry.get(name).info(), name, items, {}) is None
        said = unofficial_protocol(registry.get("viescore").info(), name, items, {})
        assert said is not None and said.startswith("the judge protocol 'viescore' cannot")
        assert f"--protocol {name} (every category in one run)" in said
    kris_items = [(i.category, i.extra) for i in load_benchmark(tmp_path / "k").items]
    split = unofficial_protocol(registry.get("kris-knowledge").info(), "kris", kris_items, {})
    assert split is None  # it asks every task instruction and knowledge: nothing absent
    rise_items = [(i.category, i.extra) for i in load_benchmark(tmp_path / "r").items]
    logical = unofficial_protocol(registry.get("rise-logical").info(), "rise", rise_items, {})
    assert logical is not None and "no plausibility for " in logical
