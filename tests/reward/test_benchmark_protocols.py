"""The built-in `imgedit`, `imgedit-uge`, `kris`, `rise` (and the superseded `kris-knowledge` and
`rise-logical`, kept for older runs) protocols against the benchmarks' own prompt files
(tests/reward/data/benchmark_prompts; its
README names each file and commit): the text sent for every edit type / task is the authors'
prompt, filled as their scripts fill it, and the answers are read as their extractors read them
(minus their guesses)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from reward_service.parsing import parse_scores
from reward_service.protocols import ProtocolRegistry, render
from reward_service.protocols.definition import ImageSlot

DATA = Path(__file__).parent / "data" / "benchmark_prompts"
REGISTRY = ProtocolRegistry.load()
INSTRUCTION = "Replace the {cat} with a <dog> and write “你好” on the wall"
HINTS = "Water boils at 100 °C; {bubbles} should show."


def _kris() -> dict[str, str]:
    tree = ast.parse((DATA / "kris_prompts.py.txt").read_text(encoding="utf-8"))
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


IMGEDIT = json.loads((DATA / "imgedit_prompts.json").read_text(encoding="utf-8"))
UGE = json.loads((DATA / "imgedit_uge_prompt.json").read_text(encoding="utf-8"))["prompt"]
KRIS = _kris()
RISE = json.loads((DATA / "rise_prompts.json").read_text(encoding="utf-8"))


def _sent(
    protocol: str,
    category: str,
    hints: str | None = None,
    *,
    inputs: int = 1,
    reference: bool = False,
    variant: str | None = None,
) -> dict[str, list[object]]:
    """What each question sends for an item with ``inputs`` input images (a reference image or
    not, of a variant or none): text and image slots, in order."""
    spec = REGISTRY.get(protocol).spec
    questions = render(
        spec,
        instruction=INSTRUCTION,
        category=category,
        hints=hints,
        mode="generate",
        inputs=inputs,
        has_reference=reference,
        variant=variant,
    )
    assert all(q.system == "" for q in questions)
    return {q.name: list(q.parts) for q in questions}


@pytest.mark.parametrize("edit_type", sorted(IMGEDIT))
def test_imgedit_sends_its_edit_types_prompt_then_both_images(edit_type: str) -> None:
    sent = _sent("imgedit", edit_type)["scores"]
    # basic_bench.py: prompt.replace('<edit_prompt>', edit_prompt), then original, then result
    assert sent[0] == IMGEDIT[edit_type].replace("<edit_prompt>", INSTRUCTION)
    assert sent[1:] == [ImageSlot("source"), ImageSlot("edited")]


def test_imgedit_reads_the_three_scores_as_step1_does() -> None:
    question = REGISTRY.get("imgedit").spec.questions[0]
    answer = (
        "Brief reasoning: No texture change applied: shell remains textured.\n"
        "Prompt Compliance: 1\nVisual Seamlessness: 4\nPhysical & Detail Fidelity: 3"
    )
    parsed = parse_scores(
        answer,
        question.scores,
        format=question.parse.format,
        pattern=question.parse.pattern,
        scale=REGISTRY.get("imgedit").spec.scale,
    )
    assert parsed.scores == {"adherence": 1, "quality": 4, "preservation": 3}
    missing = parse_scores(
        "Brief reasoning: fine.\nPrompt Compliance: 4",
        question.scores,
        format="regex",
        pattern=question.parse.pattern,
        scale=REGISTRY.get("imgedit").spec.scale,
    )
    assert set(missing.scores.values()) == {None} and missing.error


def test_imgedit_uge_sends_its_prompt_and_reads_the_labelled_score() -> None:
    sent = _sent("imgedit-uge", "uge")["overall"]
    assert sent[0] == UGE.replace("<edit_prompt>", INSTRUCTION)
    assert sent[1:] == [ImageSlot("source"), ImageSlot("edited")]
    protocol = REGISTRY.get("imgedit-uge").spec
    question = protocol.questions[0]
    parsed = parse_scores(
        "Brief reasoning: clean removal, nothing else touched.\nScore: 4",
        question.scores, format="regex", pattern=question.parse.pattern, scale=protocol.scale,
    )  # fmt: skip
    assert parsed.scores == {"overall": 4}


@pytest.mark.parametrize("task", ["color_change", "anomaly_correction"])
def test_kris_sends_its_prompts_with_the_images_labelled_as_metrics_common_does(
    task: str,
) -> None:
    sent = _sent("kris", task, HINTS)
    labelled = [
        "This is the original image:",
        ImageSlot("source"),
        "This is the edited image:",
        ImageSlot("edited"),
    ]
    assert sent["consistency"] == [KRIS["prompt_consist"].format(instruct=INSTRUCTION), *labelled]
    if task == "anomaly_correction":
        want = KRIS["prompt_abnormal_instruction_following"].format(
            instruct=INSTRUCTION, explanation=HINTS
        )
    else:
        want = KRIS["prompt_instruction_following"].format(instruct=INSTRUCTION)
    assert sent["instruction"] == [want, *labelled]
    # evaluate_with_gpt(prompt_quality, ...): sent unformatted, doubled braces and all
    assert sent["quality"][0] == KRIS["prompt_quality"]
    assert sent["quality"][1:] == ["This is the edited image:", ImageSlot("edited")]


# The tasks each of KRIS-Bench's eval scripts judges (mercurystraw/Kris_Bench@2114fec9afad and its
# later metrics_common.py; metrics_knowledge.py's daily_life and rule_reasoning are the data's
# practical_knowledge and rule-based_reasoning, as lmms-eval's kris_bench/utils.py maps them).
KRIS_COMMON = (
    "count_change", "color_change", "anomaly_correction", "position_movement",
    "size_adjustment", "part_completion", "multi-instruction_execution",
    "viewpoint_change", "temporal_prediction", "multi-element_composition",
)  # fmt: skip
KRIS_KNOWLEDGE = (
    "abstract_reasoning", "mathematics", "practical_knowledge", "medicine",
    "rule-based_reasoning", "biology", "geography", "chemistry", "humanities", "physics",
)  # fmt: skip


# The tasks whose scripts ask other questions than metrics_common.py's (each answers the same
# three scores: consistency, instruction, quality).
KRIS_QUESTIONS = {
    "viewpoint_change": ["consistency", "instruction_view", "quality"],
    "multi-element_composition": ["consistency_multi", "instruction_multi", "quality_to_evaluate"],
    "temporal_prediction": ["consistency_temporal", "instruction_temporal", "quality_to_evaluate"],
}


@pytest.mark.parametrize("task", KRIS_COMMON + KRIS_KNOWLEDGE)
def test_kris_asks_each_task_the_questions_its_authors_script_asks(task: str) -> None:
    sent = _sent("kris", task, HINTS, reference=True)  # any item may have a gt_img
    info = REGISTRY.get("kris").info()
    if task in KRIS_KNOWLEDGE:  # metrics_knowledge.py: consistency, dual_score, image_quality
        assert list(sent) == ["consistency", "instruction_knowledge", "quality"]
        want = KRIS["prompt_dual_evaluation"].format(instruct=INSTRUCTION, explanation=HINTS)
        assert sent["instruction_knowledge"][0] == want
        assert info.metrics_for(task) == [
            "consistency", "instruction", "knowledge", "quality", "overall"
        ]  # fmt: skip
    else:  # metrics_common.py and the view / temporal / multi-element scripts: no knowledge
        assert list(sent) == KRIS_QUESTIONS.get(task, ["consistency", "instruction", "quality"])
        assert info.metrics_for(task) == ["consistency", "instruction", "quality", "overall"]
    if "consistency" in sent:  # prompt_consist (all but multi-element and temporal)
        assert sent["consistency"][0] == KRIS["prompt_consist"].format(instruct=INSTRUCTION)
    quality = "quality" if "quality" in sent else "quality_to_evaluate"
    assert sent[quality][0] == KRIS["prompt_quality"]
    assert len(KRIS_COMMON + KRIS_KNOWLEDGE) == 20


def test_kris_reads_instruction_and_knowledge_from_the_one_dual_answer() -> None:
    question = next(
        q for q in REGISTRY.get("kris").spec.questions if q.name == "instruction_knowledge"
    )
    answer = (
        'Reasoning first.\n{\n  "instruction_score": 4,\n  "instruction_reasoning": "ok",\n'
        '  "knowledge_score": 2,\n  "knowledge_reasoning": "wrong colour"\n}'
    )
    parsed = parse_scores(
        answer, question.scores, format="regex", pattern=question.parse.pattern,
        scale=REGISTRY.get("kris").spec.scale,
    )  # fmt: skip
    assert parsed.scores == {"instruction": 4, "knowledge": 2}


def test_the_superseded_split_protocols_still_load_unchanged_for_older_runs() -> None:
    # Their hashes as runs made before the merge recorded them (job ids and compare read them).
    knowledge, logical = REGISTRY.get("kris-knowledge"), REGISTRY.get("rise-logical")
    assert knowledge.hash == "069e611b3409cb677720ddd88da322fabcb0eb6b74c1170083a6fc946e5855cb"
    assert logical.hash == "545c5cdc6e01aea7b77c134075d7b8a3b8be7ace39fecc494d283c249de92bf0"
    assert knowledge.info().superseded_by == "kris" and logical.info().superseded_by == "rise"
    assert REGISTRY.get("kris").info().superseded_by is None
    # The merged protocols ask exactly the split ones' prompts of the same categories.
    split = _sent("kris-knowledge", "chemistry", HINTS)
    merged = _sent("kris", "chemistry", HINTS)
    assert merged["instruction_knowledge"] == split["dual"]
    assert _sent("rise", "logical_reasoning", HINTS) == {
        f"logical_{name}": parts
        for name, parts in _sent("rise-logical", "logical_reasoning", HINTS).items()
    }


def test_kris_knowledge_asks_instruction_and_knowledge_in_one_call() -> None:
    sent = _sent("kris-knowledge", "chemistry", HINTS)
    want = KRIS["prompt_dual_evaluation"].format(instruct=INSTRUCTION, explanation=HINTS)
    assert sent["dual"][0] == want
    question = next(q for q in REGISTRY.get("kris-knowledge").spec.questions if q.name == "dual")
    answer = (
        'Reasoning first.\n{\n  "instruction_score": 4,\n  "instruction_reasoning": "ok",\n'
        '  "knowledge_score": 2,\n  "knowledge_reasoning": "wrong colour"\n}'
    )
    parsed = parse_scores(
        answer, question.scores, format="regex", pattern=question.parse.pattern,
        scale=REGISTRY.get("kris-knowledge").spec.scale,
    )  # fmt: skip
    assert parsed.scores == {"instruction": 4, "knowledge": 2}


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ('{\n"reasoning": "all kept",\n"consistency_score": 5\n}', 5),
        ("Consistency score: 3", 3),
        ("consistency_score\uff1a2", 2),  # a full-width colon, as the extractors allow
        ("I would say it is fine.", None),  # the authors would take any digit 1-5: a guess
    ],
)
def test_kris_scores_are_read_as_its_extractors_read_them(answer: str, score: int | None) -> None:
    question = REGISTRY.get("kris").spec.questions[0]
    parsed = parse_scores(
        answer, question.scores, format="regex", pattern=question.parse.pattern,
        scale=REGISTRY.get("kris").spec.scale,
    )  # fmt: skip
    assert parsed.scores == {"consistency": score}


@pytest.mark.parametrize(
    ("category", "names"),
    [
        ("temporal_reasoning", ("prompt_consist", "prompt_reasoning", "prompt_generation")),
        ("causal_reasoning", ("prompt_consist", "prompt_reasoning", "prompt_generation")),
        (
            "spatial_reasoning",
            ("prompt_spatial_cons", "prompt_spatial_ref", "prompt_spatial_qual"),
        ),
    ],
)
def test_rise_sends_gpt_evals_prompts_for_each_category(
    category: str, names: tuple[str, str, str]
) -> None:
    sent = _sent("rise", category, HINTS)
    fill = {"instruct": INSTRUCTION, "reference": HINTS}
    consistency, reasoning, plausibility = (RISE[n] for n in names)
    assert sent["consistency"] == [
        consistency.format(**fill),
        ImageSlot("source"),
        ImageSlot("edited"),
    ]
    assert sent["reasoning"] == [reasoning.format(**fill), ImageSlot("edited")]
    assert sent["plausibility"] == [plausibility, ImageSlot("edited")]


def test_rise_logical_sends_the_text_reference_prompts() -> None:
    sent = _sent("rise-logical", "logical_reasoning", HINTS)
    fill = {"instruct": INSTRUCTION, "reference": HINTS}
    assert sent["consistency"][0] == RISE["prompt_logical_cons_ans"].format(**fill)
    assert sent["reasoning"][0] == RISE["prompt_logical_txt"].format(**fill)
    assert REGISTRY.get("rise-logical").spec.scale.max == 1


def test_rise_asks_logical_puzzles_their_own_0_1_questions_in_the_same_protocol() -> None:
    protocol = REGISTRY.get("rise")
    sent = _sent("rise", "logical_reasoning", HINTS)
    fill = {"instruct": INSTRUCTION, "reference": HINTS}
    # eval_vanilla, logical_reasoning with reference_txt: two calls, no plausibility.
    assert sent == {
        "logical_consistency": [
            RISE["prompt_logical_cons_ans"].format(**fill),
            ImageSlot("source"),
            ImageSlot("edited"),
        ],
        "logical_reasoning": [RISE["prompt_logical_txt"].format(**fill), ImageSlot("edited")],
    }
    spec = protocol.spec
    scales = {q.name: spec.question_scale(q) for q in spec.questions}
    assert {n: (s.min, s.max) for n, s in scales.items()} == {
        "consistency": (1, 5),
        "reasoning": (1, 5),
        "plausibility": (1, 5),
        "logical_consistency": (0, 1),
        "logical_reasoning": (0, 1),
    }
    info = protocol.info()
    assert info.metrics_for("logical_reasoning") == [
        "logical_consistency", "logical_reasoning", "logical_weighted"
    ]  # fmt: skip
    assert info.metrics_for("causal_reasoning") == [
        "consistency", "reasoning", "plausibility", "weighted"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("Step 1 ... step 3.\n\n**Final Score:** **4**", 4),
        ("**Final Score**: **2**", 2),
        ("Final Score: 5", 5),
        ("The edit is good.", None),
        ("**Final Score:** **7**", None),  # off the 1-5 scale
        ("**Final Score:** **0**", None),  # off the 1-5 scale (the protocol's is 0-5)
    ],
)
def test_rise_reads_the_final_score_as_extract_does(answer: str, score: int | None) -> None:
    protocol = REGISTRY.get("rise").spec
    question = protocol.questions[1]
    parsed = parse_scores(
        answer, question.scores, format="regex", pattern=question.parse.pattern,
        scale=protocol.question_scale(question),
    )  # fmt: skip
    assert parsed.scores == {"reasoning": score}


def test_kris_viewpoint_change_shows_the_ground_truth_view_as_metrics_view_change_does() -> None:
    # metrics_view_change.py @2114fec9afad, evaluate_with_gpt(prompt, ori, edited, gt): each
    # image after its label, the ground truth last; quality: the edit, "This is the edited image:"
    sent = _sent("kris", "viewpoint_change", HINTS, reference=True)
    original = ["This is the original image:", ImageSlot("source")]
    edited = ["This is the edited image:", ImageSlot("edited")]
    assert sent["consistency"] == [
        KRIS["prompt_consist"].format(instruct=INSTRUCTION), *original, *edited
    ]  # fmt: skip
    assert sent["instruction_view"] == [
        KRIS["prompt_view_instruction_following"].format(instruct=INSTRUCTION),
        *original,
        *edited,
        "This is the ground truth image:",
        ImageSlot("reference"),
    ]
    assert sent["quality"] == [KRIS["prompt_quality"], *edited]


@pytest.mark.parametrize("inputs", [2, 3])
def test_kris_multi_element_shows_every_input_then_the_prediction(inputs: int) -> None:
    # metrics_multi_element.py @2114fec9afad, evaluate_multi_element_with_gpt: the prompt, then
    # "Reference Image {idx}:" and each input (idx from 1), then "Predicted Image:" and the edit;
    # evaluate_with_gpt for quality: "This is the image to evaluate:".
    sent = _sent("kris", "multi-element_composition", HINTS, inputs=inputs)
    roles = ["source", *(f"input_{n}" for n in range(2, inputs + 1))]
    shown: list[object] = []
    for idx, role in enumerate(roles, start=1):
        shown += [f"Reference Image {idx}:", ImageSlot(role)]  # type: ignore[arg-type]
    shown += ["Predicted Image:", ImageSlot("edited")]
    assert sent["consistency_multi"] == [
        KRIS["prompt_consist_multi"].format(instruct=INSTRUCTION), *shown
    ]  # fmt: skip
    assert sent["instruction_multi"] == [
        KRIS["prompt_instruction_multi"].format(instruct=INSTRUCTION), *shown
    ]  # fmt: skip
    assert sent["quality_to_evaluate"] == [
        KRIS["prompt_quality"], "This is the image to evaluate:", ImageSlot("edited")
    ]  # fmt: skip


def _temporal_layout(ori_img: list[str]) -> list[tuple[str, object]]:
    """metrics_temporal_prediction.py @2114fec9afad, re-implemented: the frame numbers from the
    references' names, the predicted frame the one missing from 1-4, every frame sorted by
    number, each after "Frame n (Reference):" / "Frame n (Generated):". Images as roles: the
    references are the item's inputs in ori_img order (source, input_2, ...)."""
    import re

    numbers = [int(re.search(r"(\d+)-(\d+)", ref).group(2)) for ref in ori_img]  # type: ignore[union-attr]
    missing = {1, 2, 3, 4} - set(numbers)
    predicted = next(iter(missing)) if len(missing) == 1 else max(numbers) + 1
    roles = ["source", *(f"input_{n}" for n in range(2, len(ori_img) + 1))]
    frames = [(n, role, "Reference") for n, role in zip(numbers, roles, strict=True)]
    frames.append((predicted, "edited", "Generated"))
    frames.sort(key=lambda frame: frame[0])
    return [(f"Frame {n} ({kind}):", ImageSlot(role)) for n, role, kind in frames]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ori_img",
    [
        ["1-2.jpg", "1-3.jpg", "1-4.jpg"],
        ["16-1.jpg", "16-3.jpg", "16-4.jpg"],
        ["26-1.jpg", "26-2.jpg", "26-4.jpg"],
        ["36-1.jpg", "36-2.jpg", "36-3.jpg"],
        ["51-2.png", "51-3.png", "51-4.png"],
    ],
)
def test_kris_temporal_shows_the_frames_in_order_with_the_generated_one_at_its_place(
    ori_img: list[str],
) -> None:
    from orchestrator.benchmarks.kris import temporal_variant

    variant = temporal_variant([f"temporal_prediction/{name}" for name in ori_img])
    sent = _sent("kris", "temporal_prediction", None, inputs=3, variant=variant)
    shown = [part for pair in _temporal_layout(ori_img) for part in pair]
    # The prompts are formatted with N= and instruct=; their text never uses N.
    assert sent["consistency_temporal"] == [
        KRIS["prompt_consist_temporal"].format(N=0, instruct=INSTRUCTION), *shown
    ]  # fmt: skip
    assert sent["instruction_temporal"] == [
        KRIS["prompt_instruction_temporal"].format(N=0, instruct=INSTRUCTION), *shown
    ]  # fmt: skip
    assert sent["quality_to_evaluate"][1:] == [
        "This is the image to evaluate:",
        ImageSlot("edited"),
    ]


def test_rise_spatial_items_with_a_reference_image_are_judged_against_it() -> None:
    # eval_vanilla, spatial_reasoning with reference_img: img1 = the reference image for the
    # consistency call (prompt_spatial_cons) and the reasoning call (prompt_spatial_ref_img).
    sent = _sent("rise", "spatial_reasoning", None, reference=True, variant="reference_image")
    assert sent["consistency"] == [
        RISE["prompt_spatial_cons"].format(instruct=INSTRUCTION),
        ImageSlot("reference"),
        ImageSlot("edited"),
    ]
    assert sent["reasoning"] == [
        RISE["prompt_spatial_ref_img"].format(instruct=INSTRUCTION),
        ImageSlot("reference"),
        ImageSlot("edited"),
    ]
    assert sent["plausibility"] == [RISE["prompt_spatial_qual"], ImageSlot("edited")]


def test_rise_logical_puzzles_with_an_image_answer_are_judged_against_it() -> None:
    # eval_vanilla, logical_reasoning with reference_img: prompt_logical_cons and
    # prompt_logical_img, each over [reference image, edit].
    sent = _sent("rise", "logical_reasoning", None, reference=True, variant="reference_image")
    assert sent == {
        "logical_consistency": [
            RISE["prompt_logical_cons"].format(instruct=INSTRUCTION),
            ImageSlot("reference"),
            ImageSlot("edited"),
        ],
        "logical_reasoning": [
            RISE["prompt_logical_img"].format(instruct=INSTRUCTION),
            ImageSlot("reference"),
            ImageSlot("edited"),
        ],
    }


def test_rise_logical_image_answers_without_the_question_when_the_data_says_so() -> None:
    # eval_vanilla with a reasoning_wo_ins column: prompt_rea = prompt_logical_img_wo_q, sent
    # as it is (not formatted); the consistency call is unchanged.
    sent = _sent(
        "rise", "logical_reasoning", None, reference=True, variant="reference_image_wo_ins"
    )
    assert sent == {
        "logical_consistency": [
            RISE["prompt_logical_cons"].format(instruct=INSTRUCTION),
            ImageSlot("reference"),
            ImageSlot("edited"),
        ],
        "logical_reasoning": [
            RISE["prompt_logical_img_wo_q"],
            ImageSlot("reference"),
            ImageSlot("edited"),
        ],
    }


@pytest.mark.parametrize(
    ("category", "variant", "prompt"),
    [
        ("temporal_reasoning", "input", "prompt_reasoning_w_input"),
        ("causal_reasoning", "input", "prompt_reasoning_w_input"),
        ("spatial_reasoning", "spatial_input", "prompt_spatial_ref_w_input"),
    ],
)
def test_rise_items_with_reasoning_img_show_their_input_to_the_reasoning_check(
    category: str, variant: str, prompt: str
) -> None:
    sent = _sent("rise", category, HINTS, variant=variant)
    fill = {"instruct": INSTRUCTION, "reference": HINTS}
    assert sent["reasoning"] == [
        RISE[prompt].format(**fill), ImageSlot("source"), ImageSlot("edited")
    ]  # fmt: skip
    assert sent["consistency"][1:] == [ImageSlot("source"), ImageSlot("edited")]
