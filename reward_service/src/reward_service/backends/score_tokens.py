"""Reading score-token probabilities off a model's logits (torch; imported by backends only).

Expected mode asks for the answer's first token distribution over the digits "0".."9" and, to
tell 1 from 10, the distribution of the token after "1". The second comes from one decode step on
the prefill's KV cache with "1" appended to every prompt of the batch, not from a second prefill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reward_service.backends.base import SCORE_DIGITS, ScoreTokenLogprobs

if TYPE_CHECKING:
    import torch


def digit_token_ids(tokenizer: Any) -> list[int]:
    """The ids of "0".."9"; raises if the tokenizer does not spell each digit as one token."""
    ids: list[int] = []
    for digit in range(SCORE_DIGITS):
        encoded = tokenizer.encode(str(digit), add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"the tokenizer spells {digit!r} as {len(encoded)} tokens; expected mode needs "
                "one token per digit (as Qwen's tokenizers have)"
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


def next_position_ids(attention_mask: torch.Tensor, rope_deltas: torch.Tensor | None) -> Any:
    """Position ids of the one token appended after a left-padded prefill.

    Qwen-VL models use 3-D multimodal RoPE: after the prompt, position = (unpadded length) +
    (the row's rope delta, which the model stores after the prefill). Without deltas the model
    is asked to work the position out from its cache (returns None).
    """
    if rope_deltas is None:
        return None
    lengths = attention_mask.sum(-1, keepdim=True).to(rope_deltas.device)
    positions = lengths + rope_deltas  # (batch, 1)
    return positions.unsqueeze(0).expand(3, -1, -1)
