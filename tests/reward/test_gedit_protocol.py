"""The built-in `gedit` protocol against GEdit-Bench's own files (tests/reward/data/gedit_viescore:
stepfun-ai/Step1X-Edit @ 570eba6ebda0c45c013983a483afbf2fd12bfcbc, GEdit-Bench/viescore/
vie_prompts.py and utils.py, byte for byte): the prompts sent, and the answers read."""

from __future__ import annotations

import ast
import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from reward_service.backends.base import GeneratedText, TokenUsage
from reward_service.protocols import ProtocolRegistry, render
from reward_service.protocols.definition import ImageSlot
from reward_service.scorer import assemble, build_items, decode_items
from service_kit.replicas.admission import BatchRun, Completed
from shared_schemas import ScoreItem, ScoreRequest
from tests.support.images import image_bytes

ORIGINAL = Path(__file__).parent / "data" / "gedit_viescore"
GEDIT = ProtocolRegistry.load().get("gedit")
INSTRUCTION = "Replace the {cat} with a <dog> and write “你好” on the wall"


def original_prompts() -> dict[str, str]:
    """Every string constant of vie_prompts.py, read without running it."""
    tree = ast.parse((ORIGINAL / "vie_prompts.py.txt").read_text(encoding="utf-8"))
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }


def gedit_sc_and_pq(instruction: str) -> tuple[str, str]:
    """The two prompts as GEdit-Bench/viescore/__init__.py builds them for task "tie"."""
    p = original_prompts()
    context = p["_context_no_delimit"]
    sc = "\n".join(
        [context, p["_prompts_0shot_two_image_edit_rule"], p["_prompts_0shot_tie_rule_SC"]]
    )
    pq = "\n".join([context, p["_prompts_0shot_rule_PQ"]])
    return sc.replace("<instruction>", instruction), pq


def original_parser() -> ModuleType:
    """GEdit-Bench/viescore/utils.py itself (it imports ``regex``, a transformers dependency)."""
    spec = importlib.util.spec_from_loader("gedit_viescore_utils", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    source = (ORIGINAL / "utils.py.txt").read_text(encoding="utf-8")
    exec(compile(source, str(ORIGINAL / "utils.py.txt"), "exec"), module.__dict__)
    return module


def test_the_fixture_is_the_original_file_and_cites_its_commit() -> None:
    readme = (ORIGINAL / "README.md").read_text()
    assert "570eba6ebda0c45c013983a483afbf2fd12bfcbc" in readme
    assert "570eba6ebda0c45c013983a483afbf2fd12bfcbc" in GEDIT.spec.reference
    text = (ORIGINAL / "vie_prompts.py.txt").read_text(encoding="utf-8")
    assert text.startswith("# This file is generated automatically through parse_prompt.py")
    assert "From scale 0 to 10: \n" in text  # trailing spaces kept


@pytest.mark.parametrize("instruction", [INSTRUCTION, "make it snow"])
def test_gedit_prompts_are_byte_identical_to_the_originals(instruction: str) -> None:
    want_sc, want_pq = gedit_sc_and_pq(instruction)
    semantics, quality = render(
        GEDIT.spec,
        instruction=instruction,
        category="color_alter",
        hints="ignored",
        mode="generate",
    )
    # Text first, then the images: GEdit's GPT-4.1 client (mllm_tools/openai.py prepare_prompt).
    assert semantics.parts == (want_sc, ImageSlot("source"), ImageSlot("edited"))
    assert quality.parts == (want_pq, ImageSlot("edited"))
    assert semantics.system == quality.system == ""
    # Line by line, so a difference names its line.
    for ours, theirs in ((semantics.parts[0], want_sc), (quality.parts[0], want_pq)):
        assert isinstance(ours, str)
        assert ours.split("\n") == theirs.split("\n")


def test_gedit_sends_one_user_turn_per_call_with_no_system_prompt() -> None:
    body = ScoreRequest.model_validate(
        {
            "items": [
                ScoreItem(
                    source_image=image_bytes(16, 16, seed=1),
                    edited_image=image_bytes(16, 16, seed=2),
                    instruction="make it snow",
                )
            ],
            "protocol": "gedit",
            "mode": "generate",
        }
    )
    [item] = build_items(GEDIT, body, decode_items(body.items, 10_000), "r")
    want_sc, want_pq = gedit_sc_and_pq("make it snow")
    assert [(q.system, q.content) for q in item.questions] == [
        (None, (want_sc, 0, 1)),
        (None, (want_pq, 1)),
    ]


def test_gedit_declares_two_scores_per_call_its_metrics_and_is_generate_only() -> None:
    info = GEDIT.info()
    assert [(q.name, q.images, q.answers) for q in info.questions] == [
        ("semantics", ["source", "edited"], ["editing_success", "over_editing"]),
        ("quality", ["edited"], ["naturalness", "artifacts"]),
    ]
    assert [(m.name, m.rule) for m in info.metrics] == [
        ("sc", "min(editing_success, over_editing)"),
        ("pq", "min(naturalness, artifacts)"),
        ("overall", "geometric_mean(sc, pq)"),
    ]
    assert info.headline == "overall" and info.modes == ["generate"]


# Answers in the shapes GEdit's mllm_output_to_dict accepts, with two scores each.
ACCEPTED = [
    '{\n"score" : [7, 3],\n"reasoning" : "The sky is red. Little else changed."\n}',
    'Sure.\n||V^=^V||\n{\n"score" : [5, 10],\n"reasoning" : "ok"\n}\n||V^=^V||',
    '```json\n{"score": [8, 9], "reasoning": "line one\nline two"}\n```',
    "[6, 0]",
    "The scores: [6,0]",
    '{"reasoning": "fine", "score": [10, 10]}',
]


# The quality call's answer, another accepted shape: SC and PQ differ, so O = sqrt(SC * PQ) is
# told apart from any other mean of the two, and an answer read for the wrong call shows.
QUALITY = '{\n"score" : [9, 4],\n"reasoning" : "Natural, a faint halo."\n}'


@pytest.mark.parametrize("answer", ACCEPTED)
def test_answers_gedit_accepts_are_read_as_gedit_reads_them(answer: str) -> None:
    parser = original_parser()
    theirs = parser.mllm_output_to_dict(answer, give_up_parsing=False)
    assert isinstance(theirs, dict), "GEdit's own parser accepts this shape"
    [result] = score_answers(answer, QUALITY)
    a, b = theirs["score"]
    naturalness, artifacts = parser.mllm_output_to_dict(QUALITY, give_up_parsing=False)["score"]
    assert [q.score for q in result.questions] == [a, b, naturalness, artifacts]
    sc, pq = min(a, b), min(naturalness, artifacts)
    assert result.scored and (result.metrics["sc"], result.metrics["pq"]) == (sc, pq) != (pq, sc)
    # GEdit-Bench's evaluate(): O = math.sqrt(SC * PQ).
    assert result.metrics["overall"] == math.sqrt(sc * pq)
    assert result.overall == result.metrics["overall"]


# Answers GEdit's parser cannot read: on its last try it guesses random.randint(0, 10).
GUESSED = [
    "The edit follows the instruction well; I would rate it 8 and 9.",
    "Score: 7",
    "",
]


@pytest.mark.parametrize("answer", GUESSED)
def test_answers_gedit_would_guess_for_are_unscored_with_their_text(answer: str) -> None:
    parser = original_parser()
    assert parser.mllm_output_to_dict(answer, give_up_parsing=False) is False
    random.seed(0)
    guessed = parser.mllm_output_to_dict(answer, give_up_parsing=True)
    assert guessed["reasoning"].startswith("guess_if_cannot_parse")
    [result] = score_answers(answer, '{"score": [9, 9], "reasoning": "fine"}')
    semantics = result.questions[:2]
    assert [q.score for q in semantics] == [None, None]
    assert all(q.raw_text == answer and q.error for q in semantics)
    assert all(q.question == "semantics" for q in semantics)
    assert result.metrics == {"sc": None, "pq": 9.0, "overall": None}
    assert not result.scored and result.overall is None


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"score": [12, 3]}', "outside 0..10"),  # GEdit takes min([12, 3]) = 3
        ('{"score": 7}', "1 score(s) where 2 were asked"),  # GEdit takes min([7]) = 7
        ("7", "1 score(s) where 2 were asked"),
        ('{"score": [7, 3, 1]}', "3 score(s)"),
    ],
)
def test_answers_gedit_reads_unsoundly_are_unscored_with_the_reason(
    answer: str, problem: str
) -> None:
    assert isinstance(original_parser().mllm_output_to_dict(answer), dict)
    [result] = score_answers(answer, '{"score": [9, 9]}')
    assert result.questions[0].score is None and problem in (result.questions[0].error or "")
    assert result.metrics["sc"] is None and result.metrics["pq"] == 9.0


def test_usage_of_an_answer_is_counted_once_for_its_two_scores() -> None:
    usage = TokenUsage(prompt_tokens=100, completion_tokens=20)
    [result] = score_answers('{"score": [7, 3]}', '{"score": [6, 6]}', usage)
    assert [q.usage is not None for q in result.questions] == [True, False, True, False]


def score_answers(sc: str, pq: str, usage: TokenUsage | None = None) -> list[Any]:
    body = ScoreRequest.model_validate(
        {
            "items": [
                ScoreItem(
                    id="a",
                    source_image=image_bytes(16, 16, seed=1),
                    edited_image=image_bytes(16, 16, seed=2),
                    instruction="make it snow",
                )
            ],
            "protocol": "gedit",
            "mode": "generate",
        }
    )
    outputs = (GeneratedText(sc, 10, usage), GeneratedText(pq, 10, usage))
    answer = Completed(outputs, BatchRun(1, 1, 0.0, 0.1), 0.0)
    return assemble(GEDIT, body, [answer], accepted_at=0.0)


def test_the_original_parser_is_loaded_from_the_fixture() -> None:
    assert "regex" in sys.modules or importlib.util.find_spec("regex") is not None
    assert callable(original_parser().mllm_output_to_dict)
