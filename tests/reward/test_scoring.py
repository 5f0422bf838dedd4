"""The expected-score math (hand-made log-probabilities) and how sub-scores combine."""

from __future__ import annotations

import math

import pytest

from reward_service.protocols.metrics import MetricSpec, check_metrics, compute_metrics
from reward_service.scoring import expected_score, leads, score_log_probs
from shared_schemas import ScoreScale

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


def _metrics(*specs: dict[str, object]) -> list[MetricSpec]:
    return [MetricSpec.model_validate(spec) for spec in specs]


VIESCORE = _metrics(
    {"name": "sc", "label": "SC", "min": ["a", "b"]},
    {"name": "pq", "label": "PQ", "min": ["c", "d"]},
    {"name": "overall", "label": "O", "geometric_mean": ["sc", "pq"]},
)


def test_viescore_takes_the_min_of_each_pair_and_the_geometric_mean() -> None:
    values = compute_metrics(VIESCORE, {"a": 8.0, "b": 6.0, "c": 9.0, "d": 4.0})
    assert values == {"sc": 6.0, "pq": 4.0, "overall": math.sqrt(6.0 * 4.0)}
    assert list(values) == ["sc", "pq", "overall"]


def test_an_unscored_question_leaves_its_metric_and_those_reading_it_unscored() -> None:
    values = compute_metrics(VIESCORE, {"a": None, "b": 6.0, "c": 9.0, "d": 4.0})
    assert values == {"sc": None, "pq": 4.0, "overall": None}


def test_a_score_rule_passes_its_one_score_through() -> None:
    [overall] = _metrics({"name": "overall", "label": "O", "score": "overall"})
    assert compute_metrics([overall], {"overall": 7.5}) == {"overall": 7.5}
    assert compute_metrics([overall], {"overall": None}) == {"overall": None}


def test_weighted_mean_mean_max_and_geometric_mean_of_three() -> None:
    metrics = _metrics(
        {"name": "w", "label": "W", "weighted_mean": {"a": 3, "b": 1}},
        {"name": "m", "label": "M", "mean": ["a", "b", "c"]},
        {"name": "x", "label": "X", "max": ["a", "c"]},
        {"name": "g", "label": "G", "geometric_mean": ["a", "b", "c"]},
    )
    values = compute_metrics(metrics, {"a": 4.0, "b": 2.0, "c": 1.0})
    assert values["w"] == pytest.approx((3 * 4 + 2) / 4)
    assert values["m"] == pytest.approx(7 / 3)
    assert values["x"] == 4.0
    assert values["g"] == pytest.approx(2.0)
    assert metrics[0].describe() == "weighted_mean(a*3, b*1)"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "m", "label": "M"}, "exactly one rule"),
        ({"name": "m", "label": "M", "min": ["a"], "mean": ["a"]}, "exactly one rule"),
        ({"name": "m", "label": "M", "weighted_mean": {"a": 0}}, "positive"),
    ],
)
def test_a_metric_needs_exactly_one_sound_rule(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricSpec.model_validate(spec)


def test_metrics_read_scores_or_metrics_above_them_and_the_headline_is_one() -> None:
    ordered = _metrics(
        {"name": "o", "label": "O", "mean": ["s"]}, {"name": "s", "label": "S", "score": "a"}
    )
    with pytest.raises(ValueError, match="neither a score"):
        check_metrics(ordered, ["a"], "s")
    with pytest.raises(ValueError, match="headline"):
        check_metrics(VIESCORE, ["a", "b", "c", "d"], "nope")
    check_metrics(VIESCORE, ["a", "b", "c", "d"], "overall")


def _log(probabilities: dict[int, float]) -> list[float]:
    return [math.log(probabilities[d]) if probabilities.get(d) else -math.inf for d in range(10)]


def test_a_one_to_five_scale_reads_the_first_digit_only() -> None:
    scale = ScoreScale(min=1, max=5)
    first = _log({0: 0.1, 1: 0.1, 3: 0.2, 4: 0.4, 7: 0.1})  # 0 and 7 are off the scale
    result = expected_score(first, UNIFORM, scale)
    assert result is not None
    mass = 0.1 + 0.2 + 0.4
    assert result.distribution == pytest.approx([0.1 / mass, 0, 0.2 / mass, 0.4 / mass, 0])
    assert result.score == pytest.approx((0.1 * 1 + 0.2 * 3 + 0.4 * 4) / mass)
    assert result.score_mass == pytest.approx(mass)
    assert leads(scale) == ()


def test_a_zero_to_twenty_five_scale_reads_two_digit_numbers_after_each_lead() -> None:
    scale = ScoreScale(min=0, max=25)
    assert leads(scale) == (1, 2)
    first = _log({1: 0.2, 2: 0.5, 7: 0.3})
    after_one = _log({2: 0.5})  # 12 with 0.1, 1 alone with 0.1
    after_two = _log({0: 0.2, 5: 0.6, 9: 0.1})  # 20: 0.1, 25: 0.3, 29 off the scale, 2 alone 0.05
    result = expected_score(first, after_one, scale, {2: after_two})
    assert result is not None
    truth = {1: 0.1, 12: 0.1, 2: 0.05, 20: 0.1, 25: 0.3, 7: 0.3}
    mass = sum(truth.values())
    assert result.score_mass == pytest.approx(mass)
    assert len(result.distribution) == 26
    assert result.distribution == pytest.approx([truth.get(n, 0.0) / mass for n in range(26)])
    assert result.score == pytest.approx(sum(n * p for n, p in truth.items()) / mass)


def test_a_scale_with_two_digit_numbers_needs_the_digits_after_each_lead() -> None:
    with pytest.raises(ValueError, match="after"):
        expected_score(UNIFORM, UNIFORM, ScoreScale(min=0, max=25))
