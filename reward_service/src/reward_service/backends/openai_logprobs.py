"""Expected-mode score tokens from an OpenAI-compatible chat completion's ``logprobs``.

The answer's ``choices[0].logprobs.content`` lists, per generated token, its log-probability and
the ``top_logprobs`` alternatives at that position (OpenAI: up to 20; vLLM: as many as asked, its
``max_logprobs`` allowing). Only what the endpoint reports counts:

- A listed token that reads as a whole score after stripping whitespace ("7", " 7", "10") gives
  that score its probability; spellings of the same score add up.
- "1" is ambiguous (1, or the start of "10" where the tokenizer spells numbers digit by digit, as
  Qwen's does). It is resolved by the next position when "1" is the token that was generated:
  there "0" continues to 10, any other digit would be 11..19 (off the scale: dropped), and the
  listed non-digit tokens end the number at 1. When a whole "10" token is listed at the first
  position, the tokenizer spells numbers as whole tokens and "1" is the score 1. Otherwise its
  split is unknown: its mass is left out, and where it is more than ``MAX_UNRESOLVED`` the
  question is unscored (the reading could move the score by up to 9 times that mass).
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
_SCORES = {str(k): k for k in range(11)}
MAX_UNRESOLVED = 0.01  # probability of a "1" that cannot be told from "10", tolerated
# Rounding an endpoint may do (float16/bfloat16 softmax): a log-probability a hair above zero, or
# listed probabilities summing a hair above one, are still probabilities.
_ABOVE_ZERO = 1e-3
_ABOVE_ONE = 0.02


@dataclass(frozen=True, slots=True)
class ScoreReading:
    tokens: ScoreTokenLogprobs
    unresolved: float  # probability of a listed "1" whose continuation is unknown
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


def read_score_tokens(positions: Sequence[Mapping[str, Any]]) -> ScoreReading:
    """The score tokens' log-probabilities from the answer's first positions (module docstring)."""
    first = _alternatives(positions[0])
    read = positions[:2] if _token(positions[0]) == "1" else positions[:1]
    for position in read:
        listed = [e for e in position.get("top_logprobs") or [] if isinstance(e, Mapping)]
        invalid = _invalid(position, listed)
        if invalid is not None:
            empty = ScoreTokenLogprobs((NEG_INF,) * SCORE_DIGITS, (NEG_INF,) * SCORE_DIGITS)
            return ScoreReading(empty, 0.0, invalid)
    by_score: dict[int, list[float]] = {k: [] for k in range(11)}
    for entry in first:
        score = _SCORES.get(_token(entry))
        if score is not None and score != 1:
            by_score[score].append(_logprob(entry))
    log_one = _logsumexp([_logprob(e) for e in first if _token(e) == "1"])
    one_generated = _token(positions[0]) == "1"
    unresolved = NEG_INF
    if one_generated and len(positions) > 1:
        after = _alternatives(positions[1])
        stop = _logsumexp([_logprob(e) for e in after if not _token(e).isdigit()])
        zero = _logsumexp([_logprob(e) for e in after if _token(e) == "0"])
        by_score[1].append(log_one + stop)
        by_score[10].append(log_one + zero)
    elif by_score[10]:  # a whole "10" token: this tokenizer spells numbers as whole tokens
        by_score[1].append(log_one)
    else:
        unresolved = log_one
    log_p = [_logsumexp(by_score[k]) for k in range(11)]
    return ScoreReading(_encode(log_p), math.exp(unresolved))


def _encode(log_p: Sequence[float]) -> ScoreTokenLogprobs:
    """log P(score = 0..10) as first / after-one digit log-probabilities, so that
    ``reward_service.scoring.score_log_probs`` gives back exactly these 11 values."""
    one, ten = log_p[1], log_p[10]
    both = _logsumexp([one, ten])
    first = [log_p[0], both, *log_p[2:10]]
    after_one = [NEG_INF] * SCORE_DIGITS
    if both != NEG_INF:
        after_one[0] = ten - both
    return ScoreTokenLogprobs(first=tuple(first), after_one=tuple(after_one))
