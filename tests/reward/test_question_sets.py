"""Per-category question sets: which questions a category is asked, metrics absent (never zero)
where an item's questions cannot make them, per-question scales, and the load-time errors that
name the problem."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from reward_service.backends.base import GeneratedText
from reward_service.protocols import ProtocolFileError, ProtocolRegistry, render
from reward_service.protocols.registry import parse_protocol
from reward_service.scorer import assemble, build_items, decode_items
from service_kit.replicas.admission import BatchRun, Completed
from shared_schemas import ScoreItem, ScoreRequest
from tests.support.images import image_bytes

SETS = """
name: two-sets
description: Puzzles get a 0/1 correctness question; every other category three 1-5 ones.
scale: {min: 0, max: 5}
answer: {generate: "End with 'Score: N'."}
questions:
  - {name: fidelity, images: [source, edited], prompt: "Fidelity of {instruction}?",
     scale: {min: 1, max: 5}}
  - {name: realism, images: [edited], prompt: "Realism?", scale: {min: 1, max: 5}}
  - {name: solved, images: [edited], prompt: "Is {instruction} solved?", scale: {min: 0, max: 1}}
  - {name: tidy, images: [edited], prompt: "Tidy?", scale: {min: 1, max: 5}}
metrics:
  - {name: fidelity, label: Fidelity, score: fidelity}
  - {name: realism, label: Realism, score: realism}
  - {name: solved, label: Solved (0/1), score: solved}
  - {name: looks, label: Looks, mean: [realism, tidy]}
  - {name: overall, label: Overall, weighted_mean: {fidelity: 2, realism: 1, tidy: 1}}
headline: overall
question_sets:
  puzzles:
    categories: [puzzle, riddle]
    questions: [solved, tidy]
  default:
    questions: [fidelity, realism, tidy]
categories:
  riddle:
    prompts: {solved: "Is the riddle {instruction} answered?"}
"""


def spec_of(text: str = SETS):  # type: ignore[no-untyped-def]
    return parse_protocol(text, "sets.yaml", "file")


def test_each_category_is_asked_its_sets_questions_in_protocol_order() -> None:
    spec = spec_of().spec
    asked = {
        category: [q.name for q in render(spec, instruction="x", category=category, hints=None,
                                          mode="generate")]
        for category in ("puzzle", "riddle", "colour", None)
    }  # fmt: skip
    assert asked == {
        "puzzle": ["solved", "tidy"],
        "riddle": ["solved", "tidy"],
        "colour": ["fidelity", "realism", "tidy"],
        None: ["fidelity", "realism", "tidy"],
    }
    [riddle, _] = render(spec, instruction="2+2", category="riddle", hints=None, mode="generate")
    assert riddle.parts[-1] == "Is the riddle 2+2 answered?\n\nEnd with 'Score: N'."


def test_protocol_info_says_which_metrics_apply_to_which_categories() -> None:
    info = spec_of().info()
    assert [(s.name, s.categories, s.questions, s.metrics) for s in info.question_sets] == [
        ("puzzles", ["puzzle", "riddle"], ["solved", "tidy"], ["solved", "looks", "overall"]),
        (
            "default",
            None,
            ["fidelity", "realism", "tidy"],
            ["fidelity", "realism", "looks", "overall"],
        ),
    ]
    assert info.metrics_for("riddle") == ["solved", "looks", "overall"]
    assert info.metrics_for("anything else") == ["fidelity", "realism", "looks", "overall"]
    assert info.metrics_for(None) == info.metrics_for("anything else")
    scales = {q.name: q.scale for q in info.questions}
    assert scales["solved"] is not None and (scales["solved"].min, scales["solved"].max) == (0, 1)
    # A protocol without sets: every metric for every category.
    single = ProtocolRegistry.load().get("single").info()
    assert single.question_sets == [] and single.metrics_for("x") == ["overall"]


def _request(categories: list[str]) -> ScoreRequest:
    items = [
        ScoreItem(
            id=f"i{n}",
            source_image=image_bytes(16, 16, seed=n),
            edited_image=image_bytes(16, 16, seed=n + 10),
            instruction=f"edit {n}",
            category=category,
        )
        for n, category in enumerate(categories)
    ]
    return ScoreRequest.model_validate({"items": items, "mode": "generate"})


def _answers(*texts: str) -> Completed[tuple[GeneratedText, ...]]:
    outputs = tuple(GeneratedText(text=t, new_tokens=4) for t in texts)
    return Completed(outputs, BatchRun(number=1, size=2, started=0.0, duration_s=0.1), 0.0)


def test_a_metric_an_items_questions_cannot_make_is_absent_not_zero_or_unscored() -> None:
    protocol = spec_of()
    body = _request(["puzzle", "colour"])
    items = build_items(protocol, body, decode_items(body.items, max_pixels=10_000), "r")
    assert [q.key for q in items[0].questions] == ["r/0/solved", "r/0/tidy"]
    assert [q.scale for q in items[0].questions] == [(0, 1), (1, 5)]  # each its own scale
    assert len(items[1].questions) == 3
    puzzle, colour = assemble(
        protocol,
        body,
        [_answers("Score: 0", "Score: 4"), _answers("Score: 5", "Score: 3", "Score: 2")],
        accepted_at=0.0,
    )
    # The puzzle was asked two questions: only the metrics they make, 0 a real score.
    assert puzzle.metrics == {"solved": 0.0, "looks": 4.0, "overall": 4.0}
    assert [q.name for q in puzzle.questions] == ["solved", "tidy"] and puzzle.scored
    # weighted_mean over the inputs the item has, weights renormalised: (2*5 + 3 + 2) / 4.
    assert colour.metrics == {"fidelity": 5.0, "realism": 3.0, "looks": 2.5, "overall": 3.75}
    assert colour.overall == 3.75


def test_an_unscored_answer_stays_none_beside_absent_metrics() -> None:
    protocol = spec_of()
    body = _request(["riddle"])
    # 3 is off the 0/1 question's own scale (inside the protocol's 0-5): unscored, never clamped.
    [riddle] = assemble(protocol, body, [_answers("Score: 3", "no number")], accepted_at=0.0)
    assert riddle.metrics == {"solved": None, "looks": None, "overall": None}
    assert not riddle.scored
    assert all(q.raw_text and q.error for q in riddle.questions)
    assert "fidelity" not in riddle.metrics and riddle.overall is None


def _broken(old: str, new: str) -> str:
    assert old in SETS
    return SETS.replace(old, new)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_broken("  default:\n    questions:", "  default:\n    categories: [x]\n    questions:"),
         "exactly one set leaves out categories"),
        (_broken("  puzzles:\n    categories: [puzzle, riddle]\n", "  puzzles:\n"),
         "exactly one set leaves out categories"),
        (_broken("categories: [puzzle, riddle]", "categories: [puzzle]")
         .replace("    questions: [fidelity, realism, tidy]",
                  "    questions: [fidelity, realism, tidy]\n  more:\n    categories: [puzzle]\n"
                  "    questions: [tidy]"),
         "category 'puzzle' is in question sets 'puzzles' and 'more'"),
        (_broken("questions: [solved, tidy]", "questions: [solved, tidy, speed]"),
         "question set 'puzzles' names unknown questions ['speed']"),
        (_broken("questions: [solved, tidy]", "questions: [tidy]"),
         "questions ['solved'] are in no question set"),
        (_broken("prompts: {solved:", "prompts: {fidelity:"),
         "category 'riddle' overrides ['fidelity'], which its question set 'puzzles' does not"),
        (_broken("scale: {min: 0, max: 1}}", "scale: {min: 0, max: 7}}"),
         "question 'solved': its scale 0..7 must lie within the protocol's 0..5"),
        (_broken("  puzzles:", "  Bad Name:"), "question set name 'Bad Name' must match"),
        (_broken("questions: [solved, tidy]", "questions: [solved, solved]"), "listed twice"),
    ],
)  # fmt: skip
def test_bad_question_sets_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ProtocolFileError, match=r"sets\.yaml") as caught:
        spec_of(text)
    assert problem in str(caught.value)


def test_two_questions_answering_one_score_must_not_share_a_set() -> None:
    text = _broken(
        '  - {name: tidy, images: [edited], prompt: "Tidy?", scale: {min: 1, max: 5}}\n',
        '  - {name: tidy, images: [edited], prompt: "Tidy?", scale: {min: 1, max: 5}}\n'
        '  - {name: tidy_too, images: [edited], prompt: "Neat?", answers: [tidy],\n'
        '     parse: {format: regex, pattern: "(?P<tidy>\\\\d)"}}\n',
    )
    split = text.replace("questions: [solved, tidy]", "questions: [solved, tidy_too]")
    assert spec_of(split).spec.questions_for("puzzle")[1].name == "tidy_too"
    both = text.replace("questions: [solved, tidy]", "questions: [solved, tidy, tidy_too]")
    with pytest.raises(ProtocolFileError, match="unique in question set 'puzzles'"):
        spec_of(both)


def test_a_metric_no_set_can_make_is_refused() -> None:
    text = _broken(
        "  - {name: solved, label: Solved (0/1), score: solved}\n",
        "  - {name: solved, label: Solved (0/1), score: solved}\n"
        "  - {name: never, label: Never, score: solved}\n",
    ).replace("questions: [solved, tidy]", "questions: [tidy]")
    with pytest.raises(ProtocolFileError) as caught:
        spec_of(text)
    assert "no question set" in str(caught.value)


def test_superseded_by_must_name_a_protocol_on_offer(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(
        SETS.replace("name: two-sets", "name: old-sets\nsuperseded_by: no-such"), encoding="utf-8"
    )
    with pytest.raises(ProtocolFileError, match=r"old.yaml: superseded_by names 'no-such'"):
        ProtocolRegistry.load(tmp_path)
    (tmp_path / "old.yaml").write_text(
        SETS.replace("name: two-sets", "name: old-sets\nsuperseded_by: single"), encoding="utf-8"
    )
    old = ProtocolRegistry.load(tmp_path).get("old-sets")
    assert old.info().superseded_by == "single"
    # Not part of what is hashed: marking a protocol superseded keeps the hash old runs hold.
    assert old.hash == spec_of(SETS.replace("name: two-sets", "name: old-sets")).hash


def test_metrics_are_computed_over_present_inputs_only() -> None:
    from reward_service.protocols.metrics import MetricSpec, compute_metrics

    metrics = [
        MetricSpec(name="a", label="A", score="a"),
        MetricSpec(name="low", label="Low", min=["a", "b"]),
        MetricSpec(name="geo", label="Geo", geometric_mean=["a", "b"]),
        MetricSpec(name="w", label="W", weighted_mean={"a": 1, "b": 3}),
    ]
    assert compute_metrics(metrics, {"b": 4.0}) == {"low": 4.0, "geo": 4.0, "w": 4.0}
    both = compute_metrics(metrics, {"a": 1.0, "b": 4.0})
    assert both == {"a": 1.0, "low": 1.0, "geo": 2.0, "w": 3.25}
    assert compute_metrics(metrics, {}) == {}
    assert compute_metrics(metrics, {"b": None}) == {"low": None, "geo": None, "w": None}
    assert not any(isinstance(v, float) and math.isnan(v) for v in both.values())
