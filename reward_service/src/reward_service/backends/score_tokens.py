"""Reading score-token probabilities off a model's logits (torch; imported by backends only).

Expected mode asks for the answer's first token distribution over the digits "0".."9" and, to
tell 1 from 10, the distribution of the token after "1". Both come from one forward pass over the
prompt with "1" appended: by causality the logits before the "1" are exactly the first answer
token's, and those at the "1" are the next token's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reward_service.backends.base import SCORE_DIGITS, ScoreTokenLogprobs
from service_kit.models.refusals import ConfigurationRefused

if TYPE_CHECKING:
    import torch


def digit_token_ids(tokenizer: Any) -> list[int]:
    """The ids of "0".."9"; a tokenizer that does not spell each digit as one token is refused
    (ConfigurationRefused: the model setting names a judge this backend cannot read)."""
    ids: list[int] = []
    for digit in range(SCORE_DIGITS):
        encoded = tokenizer.encode(str(digit), add_special_tokens=False)
        if len(encoded) != 1:
            raise ConfigurationRefused(
                f"the model's tokenizer spells {digit!r} as {len(encoded)} tokens; expected mode "
                "needs one token per digit (as Qwen's tokenizers have): set REWARD_MODEL to "
                "such a judge"
            )
        ids.append(int(encoded[0]))
    return ids


def score_token_logprobs(
    first_logits: torch.Tensor, after_one_logits: torch.Tensor, digit_ids: list[int]
) -> list[ScoreTokenLogprobs]:
    """Per row: log-softmax over the whole vocabulary (in float32), kept at the digit ids.

    ``first_logits`` are the logits at the answer's first position, ``after_one_logits`` those
    at the next position with "1" as the first answer token; both have shape (batch, vocab).
    """
    first = first_logits.float().log_softmax(-1)[:, digit_ids]
    after_one = after_one_logits.float().log_softmax(-1)[:, digit_ids]
    return [
        ScoreTokenLogprobs(first=tuple(row_first), after_one=tuple(row_after))
        for row_first, row_after in zip(first.tolist(), after_one.tolist(), strict=True)
    ]


def suffix_positions(prefix_mask: Any, suffix_mask: Any, rope_deltas: Any) -> Any:
    """3-D multimodal RoPE positions of text that continues a cached, left-padded prefix.

    Qwen-VL models place text after the images at (tokens so far) + (the row's rope delta, which
    the model stores after a prefill); every axis of M-RoPE gets the same value for text. Padding
    inside the suffix (left) gets a position too, which the attention mask makes irrelevant.
    """
    lengths = prefix_mask.sum(-1, keepdim=True)
    steps = suffix_mask.long().cumsum(-1) - 1
    positions = lengths + steps + rope_deltas.to(lengths.device)
    return positions.unsqueeze(0).expand(3, -1, -1)
