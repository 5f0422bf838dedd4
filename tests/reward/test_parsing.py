"""The generate-mode parser: what it reads as a score, and what it refuses to guess."""

from __future__ import annotations

import pytest

from reward_service.parsing import parse_score, parse_scores
from shared_schemas import ScoreScale


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


# Several scores in one answer (parse_scores).

NAMES = ["success", "overediting"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{"score": [7, 3], "reasoning": "ok"}', [7.0, 3.0]),
        ('Here:\n{\n"score" : [7, 3],\n"reasoning" : "a\nb"\n}', [7.0, 3.0]),  # newline in string
        ('{"score": {"overediting": 3, "success": 7}}', [7.0, 3.0]),
        ("[7, 3]", [7.0, 3.0]),
        ('{"score": ["7", "3.5"]}', [7.0, 3.5]),
    ],
)
def test_json_answers_with_several_scores_are_read_in_order(text: str, want: list[float]) -> None:
    parsed = parse_scores(text, NAMES, format="json", key="score")
    assert parsed.error is None
    assert [parsed.scores[n] for n in NAMES] == want


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("I think it is good.", "no JSON"),
        ('{"score": [7]}', "1 score(s) where 2 were asked"),
        ('{"score": [7, 3, 2]}', "3 score(s)"),
        ('{"score": [7, 12]}', "outside 0..10"),
        ('{"score": [7, true]}', "not a number"),
        ('{"reasoning": "no scores"}', "no 'score'"),
        ("", "empty"),
    ],
)
def test_json_answers_without_the_declared_scores_are_unscored_with_the_reason(
    text: str, problem: str
) -> None:
    parsed = parse_scores(text, NAMES, format="json", key="score")
    assert parsed.scores == {"success": None, "overediting": None}
    assert parsed.error is not None and problem in parsed.error


def test_a_regex_rule_reads_named_groups_from_the_last_match() -> None:
    pattern = r"S=(?P<success>\d+) O=(?P<overediting>\d+)"
    parsed = parse_scores("S=1 O=1\nfinal: S=4 O=5", NAMES, format="regex", pattern=pattern)
    assert parsed.scores == {"success": 4.0, "overediting": 5.0}
    missing = parse_scores("nothing", NAMES, format="regex", pattern=pattern)
    assert missing.scores == {"success": None, "overediting": None} and missing.error


def test_scores_are_bounded_by_the_protocols_scale() -> None:
    one_to_five = ScoreScale(min=1, max=5)
    assert parse_score("Score: 4/5", one_to_five).score == 4.0
    assert parse_score("4 out of 5", one_to_five).score == 4.0
    assert parse_score("Score: 0", one_to_five).score is None
    assert parse_score("Score: 7/10", one_to_five).score is None
    wide = ScoreScale(min=0, max=25)
    assert parse_score("Score: 25", wide).score == 25.0
    assert parse_scores('{"score": [25, 26]}', NAMES, scale=wide).error == (
        "the score overediting = 26 is outside 0..25"
    )


def test_gedits_repair_of_keys_and_values_without_quotes_is_followed() -> None:
    # GEdit-Bench/viescore/utils.py fix_json: keys quoted, a bare number becomes [number].
    parsed = parse_scores("{score: 7, reasoning: fine}", ["overall"], format="json")
    assert parsed.scores == {"overall": 7.0}
    # fix_json breaks this one (it quotes "[7"); its list of scores is still read, as a bare list.
    listed = parse_scores('{score: [7, 3], reasoning: "x"}', NAMES, format="json")
    assert listed.scores == {"success": 7.0, "overediting": 3.0}
