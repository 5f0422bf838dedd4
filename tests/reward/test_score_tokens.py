"""Reading score tokens off logits (hand-made logits, torch only; no model)."""

from __future__ import annotations

import pytest
import torch

from reward_service.backends.score_tokens import (
    digit_token_ids,
    score_token_logprobs,
    suffix_positions,
)
from reward_service.scoring import expected_score
from service_kit.models.refusals import ConfigurationRefused

VOCAB = 40
DIGITS = list(range(15, 25))  # where Qwen's vocabularies put "0".."9"


def logits_favouring(token: int, strength: float = 12.0) -> torch.Tensor:
    row = torch.zeros(VOCAB)
    row[token] = strength
    return row


def test_hand_made_logits_where_ten_dominates_read_as_nearly_ten() -> None:
    first = logits_favouring(DIGITS[1]).unsqueeze(0)  # "1"
    after_one = logits_favouring(DIGITS[0]).unsqueeze(0)  # then "0"
    [raw] = score_token_logprobs(first, after_one, DIGITS)
    result = expected_score(raw.first, raw.after_one)
    assert result is not None
    assert result.distribution[10] > 0.99
    assert 9.9 < result.score <= 10.0


def test_hand_made_logits_where_one_then_the_end_dominates_read_as_one() -> None:
    first = logits_favouring(DIGITS[1]).unsqueeze(0)
    after_one = logits_favouring(3).unsqueeze(0)  # a non-digit token ends the answer
    [raw] = score_token_logprobs(first, after_one, DIGITS)
    result = expected_score(raw.first, raw.after_one)
    assert result is not None
    assert result.distribution[1] > 0.99
    assert result.score == pytest.approx(1.0, abs=0.05)


def test_softmax_is_over_the_whole_vocabulary_so_other_tokens_lower_the_score_mass() -> None:
    first = torch.zeros(1, VOCAB)
    first[0, 0] = 10.0  # most mass on a non-digit
    [raw] = score_token_logprobs(first, torch.zeros(1, VOCAB), DIGITS)
    result = expected_score(raw.first, raw.after_one)
    assert result is not None
    assert result.score_mass < 0.01
    assert sum(result.distribution) == pytest.approx(1.0)


def test_rows_are_read_independently() -> None:
    first = torch.stack([logits_favouring(DIGITS[3]), logits_favouring(DIGITS[8])])
    rows = score_token_logprobs(first, torch.zeros(2, VOCAB), DIGITS)
    scores = [expected_score(r.first, r.after_one) for r in rows]
    assert [round(s.score) for s in scores if s is not None] == [3, 8]


def test_bf16_logits_are_read_in_float32() -> None:
    # Spread logits: a log-softmax computed in bf16 (8 mantissa bits) lands up to ~0.03 off at
    # these magnitudes; one computed in float32 from the same bf16 values agrees with float64.
    spread = torch.linspace(-4.0, 6.0, VOCAB) + torch.arange(VOCAB) % 7 * 0.137
    first = spread.to(torch.bfloat16).unsqueeze(0)
    [raw] = score_token_logprobs(first, first, DIGITS)
    exact = first.double().log_softmax(-1)[0, DIGITS].tolist()
    assert raw.first == pytest.approx(exact, abs=1e-5)
    assert raw.after_one == pytest.approx(exact, abs=1e-5)


def test_suffix_text_is_placed_after_each_rows_own_prefix() -> None:
    prefix = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding
    suffix = torch.tensor([[0, 1, 1], [1, 1, 1]])  # left padding inside the suffix too
    deltas = torch.tensor([[-2], [4]])  # from the prefill's multimodal positions
    positions = suffix_positions(prefix, suffix, deltas)
    assert positions.shape == (3, 2, 3)
    assert positions[0, 0, 1:].tolist() == [1, 2]  # 3 real prefix tokens - 2, then on
    assert positions[0, 1].tolist() == [9, 10, 11]  # 5 real prefix tokens + 4
    assert (positions[0] == positions[1]).all() and (positions[1] == positions[2]).all()


class _Tokenizer:
    def __init__(self, split: bool) -> None:
        self.split = split

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [100, 15 + int(text)] if self.split else [15 + int(text)]


def test_digit_ids_are_one_token_per_digit() -> None:
    assert digit_token_ids(_Tokenizer(split=False)) == DIGITS


def test_a_tokenizer_that_splits_digits_is_refused_for_its_configuration() -> None:
    with pytest.raises(ConfigurationRefused, match=r"one token per digit.*REWARD_MODEL"):
        digit_token_ids(_Tokenizer(split=True))
