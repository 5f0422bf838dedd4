"""Scores from the judge's outputs: the expected-score math and how sub-scores combine.

Pure Python (no torch): every backend returns raw log-probabilities or text, and the numbers a
client sees are computed here, in one place.

Expected mode, on the 0..10 scale, where Qwen spells 10 as the two tokens "1", "0":

    P(k)  = P("k")                                      k = 0, 2, 3, ..., 9
    P(1)  = P("1") * (1 - sum_d P(d | "1"))             "1" followed by anything but a digit
    P(10) = P("1") * P("0" | "1")

``"1"`` followed by "1".."9" would be 11..19, off the scale: that mass is dropped, like the mass of
every non-digit first token. The 11 probabilities are renormalised to sum to 1; ``score_mass`` is
their sum before renormalisation (how much the judge wanted to answer with a score at all) and the
score is the mean of the renormalised distribution. Everything is done in log space, so a judge
that puts almost no mass on the scores still gets a well-defined distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SCORE_VALUES = tuple(range(11))  # 0..10
CombineRule = Literal["viescore", "single"]


@dataclass(frozen=True, slots=True)
class ExpectedScore:
    score: float
    distribution: tuple[float, ...]  # P(score = 0..10), sums to 1
    score_mass: float


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _log1mexp(log_p: float) -> float:
    """log(1 - exp(log_p)) for log_p <= 0, accurate near both ends."""
    if log_p >= 0.0:
        return -math.inf
    if log_p > -math.log(2):
        return math.log(-math.expm1(log_p))
    return math.log1p(-math.exp(log_p))


def score_log_probs(first: Sequence[float], after_one: Sequence[float]) -> list[float]:
    """log P(score = k), k = 0..10, before renormalisation (see the module docstring)."""
    if len(first) != 10 or len(after_one) != 10:
        raise ValueError("need the log-probabilities of the 10 digit tokens at both positions")
    log_one = first[1]
    one_then_stop = log_one + _log1mexp(min(0.0, _logsumexp(after_one)))
    one_then_zero = log_one + after_one[0]
    return [first[0], one_then_stop, *first[2:10], one_then_zero]


def expected_score(first: Sequence[float], after_one: Sequence[float]) -> ExpectedScore | None:
    """The probability-weighted score; None if every score has probability 0 or any is NaN."""
    log_probs = score_log_probs(first, after_one)
    if any(math.isnan(lp) for lp in log_probs):
        return None
    total = _logsumexp(log_probs)
    if total == -math.inf or math.isnan(total):
        return None
    distribution = tuple(math.exp(lp - total) for lp in log_probs)
    mean = math.fsum(k * p for k, p in zip(SCORE_VALUES, distribution, strict=True))
    return ExpectedScore(
        score=min(10.0, max(0.0, mean)),
        distribution=distribution,
        score_mass=min(1.0, math.exp(total)),
    )


@dataclass(frozen=True, slots=True)
class Combined:
    sc: float | None
    pq: float | None
    overall: float | None


def combine(rule: CombineRule, scores: Sequence[tuple[str | None, float | None]]) -> Combined:
    """Combine (group, score) pairs; a group with any unscored question has no value.

    viescore: SC = min of the "sc" scores, PQ = min of the "pq" scores, overall = sqrt(SC * PQ)
    (GEdit-Bench's rule). single: overall = the one score.
    """
    if rule == "single":
        if len(scores) != 1:
            raise ValueError("the single rule combines exactly one score")
        return Combined(sc=None, pq=None, overall=scores[0][1])
    sc = _min_of([s for group, s in scores if group == "sc"])
    pq = _min_of([s for group, s in scores if group == "pq"])
    overall = math.sqrt(sc * pq) if sc is not None and pq is not None else None
    return Combined(sc=sc, pq=pq, overall=overall)


def _min_of(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)
