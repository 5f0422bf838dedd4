"""Expected-mode score tokens from an OpenAI-compatible chat completion's ``logprobs``.

The answer's ``choices[0].logprobs.content`` lists, per generated token, its log-probability and
the ``top_logprobs`` alternatives at that position (OpenAI: up to 20; vLLM: as many as asked, its
``max_logprobs`` allowing). Only what the endpoint reports counts:

- A listed token that reads as a whole score of the question's scale after stripping whitespace
  ("7", " 7", "10", "25") gives that score its probability; spellings of the same score add up.
- A lead digit (the first digit of the scale's two-digit numbers: "1" on 0..10, "1" and "2" on
  0..25) is ambiguous: the score itself, or the start of a longer number where the tokenizer
  spells numbers digit by digit, as Qwen's does. It is resolved by the next position when the
  lead is the token that was generated: there a digit continues the number (off the scale:
  dropped) and the listed non-digit tokens end it at the lead. When a whole two-digit token
  with that lead is listed at the first position, the tokenizer spells numbers as whole tokens
  and the lead is its own score. Otherwise its split is unknown: its mass is left out, and where
  it is more than ``MAX_UNRESOLVED`` the question is unscored.
- A log-probability that is not a number, is NaN or +inf, or is above zero, or a position whose
  listed probabilities add up to more than one, is no probability at all: the question is
  unscored with the reason (``ScoreReading.invalid``), never read as a confident score.
- Scores the top list does not show (the endpoint omitted them: each is below the smallest listed
  probability) get probability zero.

Whatever is left out lowers ``score_mass`` (reported with every score) instead of being guessed;
the distribution is renormalised over what was seen. The result is encoded as the same
``ScoreTokenLogprobs`` the local backend returns, so the one expected-score computation
(``reward_service.scoring``) reads both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reward_service.backends.base import SCORE_DIGITS, ScoreTokenLogprobs

NEG_INF = -math.inf
# vLLM reports -9999.0 for a log-probability of minus infinity; OpenAI's lowest is about -100.
_FLOOR = -9999.0
MAX_UNRESOLVED = 0.01  # probability of a lead digit that cannot be told from its numbers, tolerated
# Rounding an endpoint may do (float16/bfloat16 softmax): a log-probability a hair above zero, or
# listed probabilities summing a hair above one, are still probabilities.
_ABOVE_ZERO = 1e-3
_ABOVE_ONE = 0.02


@dataclass(frozen=True, slots=True)
class ScoreReading:
    tokens: ScoreTokenLogprobs
    unresolved: float  # probability of a listed lead digit whose continuation is unknown
    invalid: str | None = None  # why these are not probabilities (then nothing else counts)


def _invalid(position: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the log-probabilities listed at one position are not probabilities, or None."""
    total = 0.0
    seen: set[object] = set()
    for entry in (position, *entries):
        value = entry.get("logprob")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"a log-probability that is not a number ({type(value).__name__})"
        number = float(value)
        if math.isnan(number) or number == math.inf:
            return f"an impossible log-probability ({number})"
        if number > _ABOVE_ZERO:
            return f"a log-probability above zero ({number:.4g})"
        token = entry.get("token")
        if entry is not position and token not in seen:
            seen.add(token)
            total += math.exp(min(0.0, number))
    if total > 1.0 + _ABOVE_ONE:
        return f"listed probabilities that add up to {total:.3f}"
    return None


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values, default=NEG_INF)
    if top == NEG_INF:
        return NEG_INF
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _logprob(entry: Mapping[str, Any]) -> float:
    value = entry.get("logprob")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NEG_INF
    number = float(value)
    if math.isnan(number) or number <= _FLOOR:
        return NEG_INF
    return min(0.0, number)


def _token(entry: Mapping[str, Any]) -> str:
    token = entry.get("token")
    return token.strip() if isinstance(token, str) else ""


def _alternatives(position: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The listed tokens at one position, the generated one included (some servers omit it)."""
    listed = [e for e in position.get("top_logprobs") or [] if isinstance(e, Mapping)]
    if not any(e.get("token") == position.get("token") for e in listed):
        listed.append(position)
    return listed


def positions_of(completion: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """``choices[0].logprobs.content``, or None where the answer carries no log-probabilities."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    logprobs = choices[0].get("logprobs")
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list) or not content:
        return None
    positions = [p for p in content if isinstance(p, Mapping)]
    if not positions or not any(p.get("top_logprobs") for p in positions[:1]):
        return None
    return positions


def read_score_tokens(
    positions: Sequence[Mapping[str, Any]], scale: tuple[int, int] = (0, 10)
) -> ScoreReading:
    """The score tokens' log-probabilities from the answer's first positions (module docstring),
    on the integer scale ``scale`` (min, max)."""
    low, high = scale
    values = range(low, high + 1)
    spelled = {str(n): n for n in values}
    leads = sorted({n // 10 for n in values if n >= 10})
    first = _alternatives(positions[0])
    generated = _token(positions[0])
    read = positions[:2] if generated in {str(lead) for lead in leads} else positions[:1]
    for position in read:
        listed = [e for e in position.get("top_logprobs") or [] if isinstance(e, Mapping)]
        invalid = _invalid(position, listed)
        if invalid is not None:
            empty = ScoreTokenLogprobs((NEG_INF,) * SCORE_DIGITS, (NEG_INF,) * SCORE_DIGITS)
            return ScoreReading(empty, 0.0, invalid)
    by_score: dict[int, list[float]] = {n: [] for n in values}
    for entry in first:
        score = spelled.get(_token(entry))
        if score is not None and score not in leads:
            by_score[score].append(_logprob(entry))
    unresolved: list[float] = []
    for lead in leads:
        log_lead = _logsumexp([_logprob(e) for e in first if _token(e) == str(lead)])
        if generated == str(lead) and len(positions) > 1:
            after = _alternatives(positions[1])
            if lead in by_score:
                stop = _logsumexp([_logprob(e) for e in after if not _token(e).isdigit()])
                by_score[lead].append(log_lead + stop)
            for digit in range(SCORE_DIGITS):
                number = lead * 10 + digit
                if number in by_score:
                    following = [_logprob(e) for e in after if _token(e) == str(digit)]
                    by_score[number].append(log_lead + _logsumexp(following))
        elif any(by_score[n] for n in values if n >= 10 and n // 10 == lead):
            # whole two-digit tokens: this tokenizer spells numbers as whole tokens
            if lead in by_score:
                by_score[lead].append(log_lead)
        else:
            unresolved.append(log_lead)
    log_p = {n: _logsumexp(by_score[n]) for n in values}
    return ScoreReading(_encode(log_p, leads), math.exp(_logsumexp(unresolved)))


def _encode(log_p: Mapping[int, float], leads: Sequence[int]) -> ScoreTokenLogprobs:
    """log P(score = n) as first-digit and after-lead digit log-probabilities, so that
    ``reward_service.scoring.score_log_probs`` gives back exactly these values."""
    first = [log_p.get(d, NEG_INF) for d in range(SCORE_DIGITS)]
    after: dict[int, list[float]] = {}
    for lead in leads:
        numbers = [log_p.get(lead * 10 + d, NEG_INF) for d in range(SCORE_DIGITS)]
        whole = _logsumexp([log_p.get(lead, NEG_INF), *numbers])
        first[lead] = whole
        after[lead] = [NEG_INF if whole == NEG_INF else lp - whole for lp in numbers]
    after_one = after.pop(1, [NEG_INF] * SCORE_DIGITS)
    return ScoreTokenLogprobs(
        first=tuple(first),
        after_one=tuple(after_one),
        after_other=tuple((lead, tuple(v)) for lead, v in sorted(after.items())),
    )
