"""Expected scores from the judge's score-token log-probabilities, on any integer scale.

Pure Python (no torch): every backend returns raw log-probabilities or text, and the numbers a
client sees are computed here, in one place (how scores combine into metrics:
reward_service.protocols.metrics).

Expected mode, on a scale min..max (max <= 99), where Qwen spells 10..99 as two digit tokens. A
digit ``d`` is a *lead* when some two-digit number of the scale starts with it (0..10: "1";
0..25: "1" and "2"); the backend reports, besides the first answer token's distribution over the
digits, the distribution of the token after each lead:

    P(n)   = P("n")                                   one-digit n that is no lead
    P(n)   = P("n") * (1 - sum_k P(k | "n"))          one-digit n that is a lead: n, then no digit
    P(dk)  = P("d") * P("k" | "d")                    two-digit n = dk

A lead followed by a digit that makes an off-scale number (11..19 on 0..10, 26..29 on 0..25),
like every non-digit first token and every digit below the scale, is dropped. The probabilities
are renormalised to sum to 1; ``score_mass`` is their sum before renormalisation (how much the
judge wanted to answer with a score at all) and the score is the mean of the renormalised
distribution. Everything is done in log space, so a judge that puts almost no mass on the scores
still gets a well-defined distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared_schemas import DEFAULT_SCALE, ScoreScale

DIGITS = 10


def leads(scale: ScoreScale) -> tuple[int, ...]:
    """The first digits of the scale's two-digit numbers, whose next token must be read."""
    return tuple(sorted({n // 10 for n in scale.values if n >= 10}))


@dataclass(frozen=True, slots=True)
class ExpectedScore:
    score: float
    distribution: tuple[float, ...]  # P(score = scale.min..scale.max), sums to 1
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


def score_log_probs(
    first: Sequence[float],
    after_one: Sequence[float],
    scale: ScoreScale = DEFAULT_SCALE,
    after: Mapping[int, Sequence[float]] | None = None,
) -> list[float]:
    """log P(score = n), n = scale.min..scale.max, before renormalisation (module docstring).

    ``after_one`` is the distribution after "1"; ``after`` holds those after the other leads.
    """
    following = {1: after_one, **(after or {})}
    if len(first) != DIGITS or any(len(v) != DIGITS for v in following.values()):
        raise ValueError("need the log-probabilities of the 10 digit tokens at every position")
    needed = leads(scale)
    missing = [d for d in needed if d not in following]
    if missing:
        raise ValueError(f"the scale needs the digits after {missing}, which were not read")
    log_probs = []
    for n in scale.values:
        if n < DIGITS:
            lp = first[n]
            if n in needed:
                lp += _log1mexp(min(0.0, _logsumexp(following[n])))
        else:
            lead, digit = divmod(n, DIGITS)
            lp = first[lead] + following[lead][digit]
        log_probs.append(lp)
    return log_probs


def expected_score(
    first: Sequence[float],
    after_one: Sequence[float],
    scale: ScoreScale = DEFAULT_SCALE,
    after: Mapping[int, Sequence[float]] | None = None,
) -> ExpectedScore | None:
    """The probability-weighted score; None if every score has probability 0 or any is NaN."""
    log_probs = score_log_probs(first, after_one, scale, after)
    if any(math.isnan(lp) for lp in log_probs):
        return None
    total = _logsumexp(log_probs)
    if total == -math.inf or math.isnan(total):
        return None
    distribution = tuple(math.exp(lp - total) for lp in log_probs)
    mean = math.fsum(k * p for k, p in zip(scale.values, distribution, strict=True))
    return ExpectedScore(
        score=min(float(scale.max), max(float(scale.min), mean)),
        distribution=distribution,
        score_mass=min(1.0, math.exp(total)),
    )
