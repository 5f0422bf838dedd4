"""The questions of one prefix folded into one row of the question pass (``prefix_passes``).

``copied`` (transformers' way) copies each prefix's KV cache once per question (the cache's
``reorder_cache``), then runs one row per question over it: on the H100 those copies and the
cache update's concatenation of them were 8.8 % of a viescore batch's kernel time. ``folded``
keeps the prefill's cache as it is (one row per prefix) and runs one row per prefix holding its
questions' own tokens side by side: question j in a segment of S slots (S: the bucket's longest
question), left-padded inside it, so its last two tokens sit at (j+1)*S-2 and (j+1)*S-1 in every
row. A 4-D mask lets each question see its prefix's real tokens and its own segment causally,
never another question's segment; a padding slot sees itself alone, so no row of the softmax is
empty (an all-masked row gives NaN, which the next layer's values would carry).

Mask semantics are transformers 5.23's (masking_utils.py): a 4-D mask goes to the attention as
it is (``_preprocess_mask_arguments``); SDPA takes booleans, True where a key takes part
(``sdpa_mask``), eager attention adds 0 there and the dtype's minimum elsewhere (``eager_mask``).
Flash attention takes no 4-D mask: there the questions run ``copied``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from reward_service.backends.base import InvalidOption

PrefixPasses = Literal["folded", "copied"]


def prefix_passes_option(options: dict[str, Any], attn_implementation: str) -> PrefixPasses:
    """``prefix_passes`` as set (default ``folded``); ``copied`` where the attention takes no
    4-D mask (flash attention)."""
    chosen = str(options.get("prefix_passes", "folded"))
    if chosen not in ("folded", "copied"):
        raise InvalidOption(f"prefix_passes must be 'folded' or 'copied', not {chosen!r}")
    if chosen == "copied" or "flash" in attn_implementation:
        return "copied"
    return "folded"


@dataclass(frozen=True, slots=True)
class Folded:
    """The question pass's inputs: one row per prefix."""

    input_ids: Any  # (prefixes, m * S)
    attention_mask: Any  # (prefixes, 1, m * S, W + m * S): bool, or additive for eager
    position_ids: Any  # (3, prefixes, m * S)
    logits_to_keep: Any  # 1-D: each segment's last two slots
    rows: list[int]  # per question: its prefix row
    segments: list[int]  # per question: its segment in that row


def fold(
    suffix_ids: Any,
    suffix_mask: Any,
    owners: list[int],
    prefix_mask: Any,
    rope_deltas: Any,
    pad_id: int,
    eager_dtype: Any = None,
) -> Folded:
    """Fold the questions (``suffix_ids``/``suffix_mask``: one left-padded row each, ``owners``:
    each one's prefix row) onto their prefixes (``prefix_mask``: (P, W), left-padded; the cached
    rows). Positions continue each prefix as ``score_tokens.suffix_positions`` has them. With
    ``eager_dtype`` the mask is additive in that dtype (eager attention), else boolean (SDPA)."""
    import torch

    device = prefix_mask.device
    lengths = suffix_mask.sum(-1).tolist()
    width = max(int(n) for n in lengths)  # S
    prefixes = prefix_mask.shape[0]
    segments: list[int] = []
    taken = [0] * prefixes
    for owner in owners:
        segments.append(taken[owner])
        taken[owner] += 1
    count = max(taken)  # m
    span = count * width
    ids = torch.full((prefixes, span), pad_id, dtype=suffix_ids.dtype)
    real = torch.zeros((prefixes, span), dtype=torch.bool)
    for q, (owner, segment) in enumerate(zip(owners, segments, strict=True)):
        n = int(lengths[q])
        end = (segment + 1) * width
        ids[owner, end - n : end] = suffix_ids[q, suffix_ids.shape[1] - n :]
        real[owner, end - n : end] = True
    ids, real = ids.to(device), real.to(device)

    slots = torch.arange(span, device=device)
    segment_of = slots // width
    # Within a segment: causal, and only between real tokens; each slot sees itself.
    same = segment_of[:, None] == segment_of[None, :]
    causal = slots[:, None] >= slots[None, :]
    own = (same & causal)[None] & real[:, None, :] & real[:, :, None]
    own |= torch.eye(span, dtype=torch.bool, device=device)[None]
    # The prefix's real tokens, for the real slots only.
    seen = prefix_mask.bool()[:, None, :] & real[:, :, None]
    mask = torch.cat([seen, own], dim=-1)[:, None]  # (P, 1, span, W + span)
    if eager_dtype is not None:
        zero = torch.zeros((), device=device, dtype=eager_dtype)
        mask = torch.where(mask, zero, torch.finfo(eager_dtype).min)

    # Positions: the prefix's length, plus the token's place among its segment's real ones,
    # plus the row's rope delta (padding slots get a position too; the mask makes it moot).
    steps = real.view(prefixes, count, width).long().cumsum(-1).view(prefixes, span) - 1
    starts = prefix_mask.sum(-1, keepdim=True)
    positions = starts + steps + rope_deltas.to(device).view(prefixes, 1)
    keep = torch.stack([slots[width - 2 :: width], slots[width - 1 :: width]], dim=1).flatten()
    return Folded(
        ids,
        mask,
        positions.unsqueeze(0).expand(3, -1, -1),
        keep,
        list(owners),
        segments,
    )


def read_folded(logits: Any, folded: Folded) -> tuple[Any, Any]:
    """Per question (in the order folded): the logits at its last two slots, (Q, vocab) each.
    ``logits`` are the pass's, kept at ``folded.logits_to_keep``: (P, 2m, vocab)."""
    import torch

    rows = torch.tensor(folded.rows, device=logits.device)
    at = torch.tensor(folded.segments, device=logits.device) * 2
    return logits[rows, at], logits[rows, at + 1]
