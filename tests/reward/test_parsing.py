"""The generate-mode parser: what it reads as a score, and what it refuses to guess."""

from __future__ import annotations

import pytest

from reward_service.parsing import parse_score


@pytest.mark.parametrize(
    ("text", "score", "rule"),
    [
        ("Score: 7", 7.0, "labelled"),
        ("The sky is red now.\nScore: 10", 10.0, "labelled"),
        ("Score: 0", 0.0, "labelled"),
        ("**Final score:** 9", 9.0, "labelled"),
        ("score = 3.5", 3.5, "labelled"),
        ("Overall rating is seven.", 7.0, "labelled"),
        ("Score: 8/10", 8.0, "labelled"),
        ("Score:6", 6.0, "labelled"),
        ("I first thought Score: 3, but no.\nScore: 4", 4.0, "labelled"),
        ('{"score": 8, "reasoning": "clean edit"}', 8.0, "json"),
        ('{"reasoning": "ok", "score": "6"}', 6.0, "json"),
        ('Here: {"score": [9]}', 9.0, "json"),
        ('```json\n{"Score": 2}\n```', 2.0, "json"),
        ("I give it 7/10.", 7.0, "fraction"),
        ("7 out of 10", 7.0, "fraction"),
        ("Good edit, minor halo.\n6", 6.0, "lone_number"),
        ("Good edit.\n**6.**", 6.0, "lone_number"),
        ("10", 10.0, "lone_number"),
        ("<think>Score: 3 seems low</think>Score: 9", 9.0, "labelled"),
    ],
)
def test_scores_are_read_from_common_answer_shapes(text: str, score: float, rule: str) -> None:
    parsed = parse_score(text)
    assert (parsed.score, parsed.rule, parsed.error) == (score, rule, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("gogh</tool_response> painting ir ir", "no score"),
        ("Score: N", "no score"),
        ("Rate it on a scale of 0 to 10 please", "no score"),
        ("I cannot evaluate these images.", "no score"),
        ("1/100 of the image changed", "no score"),
        ("Score: 12", "outside 0..10"),
        ("Score: -1", "outside 0..10"),
        ("I rate it 11/10", "outside 0..10"),
        ("Score: 4/5", "not on the 0..10 scale"),
        ('{"score": [7, 8], "reasoning": "two scores"}', "several scores"),
        ('{"score": true}', "not a number"),
        ('{"score": "great"}', "not a number"),
        ("<think>Score: 7</think>", "empty"),
    ],
)
def test_answers_without_a_usable_score_are_unscored_with_a_reason(text: str, reason: str) -> None:
    parsed = parse_score(text)
    assert parsed.score is None
    assert parsed.error is not None and reason in parsed.error


def test_an_off_scale_labelled_score_is_not_replaced_by_a_weaker_match() -> None:
    parsed = parse_score("Looks 7/10 to me.\nScore: 15")
    assert parsed.score is None and parsed.rule == "labelled"
