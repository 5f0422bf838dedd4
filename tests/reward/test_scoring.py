"""The expected-score math (hand-made log-probabilities) and how sub-scores combine."""

from __future__ import annotations

import math

import pytest

from reward_service.scoring import combine, expected_score, score_log_probs

UNIFORM = [math.log(0.1)] * 10


def logs(probabilities: list[float]) -> list[float]:
    return [math.log(p) if p > 0 else -math.inf for p in probabilities]


def test_expected_score_is_the_probability_weighted_mean() -> None:
    first = logs([0, 0, 0, 0, 0, 0, 0.5, 0, 0.5, 0])  # half 6, half 8
    result = expected_score(first, UNIFORM)
    assert result is not None
    assert result.score == pytest.approx(7.0)
    assert result.distribution[6] == pytest.approx(0.5)
    assert result.distribution[8] == pytest.approx(0.5)
    assert result.score_mass == pytest.approx(1.0)


def test_ten_is_one_followed_by_zero() -> None:
    first = logs([0.02, 0.9, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])
    after_one = logs([0.95, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # "1" then "0", else the end
    result = expected_score(first, after_one)
    assert result is not None
    assert result.distribution[10] == pytest.approx(0.9 * 0.95)
    assert result.distribution[1] == pytest.approx(0.9 * 0.05)
    assert result.score > 8.5


def test_one_followed_by_the_end_is_a_one() -> None:
    first = logs([0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0])
    after_one = [-math.inf] * 10  # nothing but non-digits after "1"
    result = expected_score(first, after_one)
    assert result is not None
    assert result.score == pytest.approx(1.0)
    assert result.distribution[1] == pytest.approx(1.0)


def test_one_followed_by_another_digit_is_off_the_scale() -> None:
    first = logs([0, 0.5, 0, 0, 0, 0, 0, 0, 0, 0.5])
    after_one = logs([0, 0, 0, 0, 0, 0.6, 0, 0, 0, 0])  # 15: 60% of the "1" path
    log_probs = score_log_probs(first, after_one)
    assert math.exp(log_probs[1]) == pytest.approx(0.5 * 0.4)  # 1, then no digit
    assert log_probs[10] == -math.inf
    result = expected_score(first, after_one)
    assert result is not None
    assert result.score_mass == pytest.approx(0.2 + 0.5)
    assert result.distribution[9] == pytest.approx(0.5 / 0.7)


def test_mass_outside_the_scores_is_reported_and_renormalised_away() -> None:
    first = logs([0.01, 0, 0, 0, 0, 0, 0, 0, 0, 0.03])  # 96% said something else
    result = expected_score(first, UNIFORM)
    assert result is not None
    assert result.score_mass == pytest.approx(0.04)
    assert sum(result.distribution) == pytest.approx(1.0)
    assert result.score == pytest.approx(9 * 0.75)


def test_a_vanishing_score_mass_still_gives_a_distribution() -> None:
    first = [-900.0, *[-1000.0] * 9]  # exp() underflows to 0 in float64
    result = expected_score(first, [-1000.0] * 10)
    assert result is not None
    assert result.score_mass == 0.0
    assert result.distribution[0] == pytest.approx(1.0)
    assert result.score == pytest.approx(0.0)


def test_no_probability_on_any_score_gives_no_score() -> None:
    assert expected_score([-math.inf] * 10, [-math.inf] * 10) is None


def test_nan_log_probabilities_give_no_score() -> None:
    assert expected_score([math.nan, *UNIFORM[1:]], UNIFORM) is None


def test_score_log_probs_needs_ten_digits_per_position() -> None:
    with pytest.raises(ValueError, match="10 digit"):
        score_log_probs([0.0] * 9, UNIFORM)


def test_viescore_takes_the_min_of_each_pair_and_the_geometric_mean() -> None:
    combined = combine("viescore", [("sc", 8.0), ("sc", 6.0), ("pq", 9.0), ("pq", 4.0)])
    assert combined.sc == 6.0
    assert combined.pq == 4.0
    assert combined.overall == pytest.approx(math.sqrt(24.0))


def test_an_unscored_question_leaves_its_group_and_the_overall_unscored() -> None:
    combined = combine("viescore", [("sc", None), ("sc", 6.0), ("pq", 9.0), ("pq", 4.0)])
    assert combined.sc is None
    assert combined.pq == 4.0
    assert combined.overall is None


def test_single_passes_its_one_score_through() -> None:
    assert combine("single", [("overall", 7.5)]).overall == 7.5
    assert combine("single", [("overall", None)]).overall is None
    with pytest.raises(ValueError, match="exactly one"):
        combine("single", [("overall", 1.0), ("overall", 2.0)])
