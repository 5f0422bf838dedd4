"""User text is only ever text: no string a user writes reaches a chat template as structure.

A Qwen tokenizer turns ``<|image_pad|>``, ``<|im_end|>``, ``<think>``... into control tokens
wherever they appear in the text it is given, the user's part included: an image placeholder
without an image is a 500 from inside the model (and in the judge it failed every request of its
batch), a turn end lets a user write the judge's own answer. So text that holds one of them is
refused with 400 naming the field.

The set is the loaded tokenizer's own (its added and special tokens), never a hand-kept list: the
backend derives it when it loads (``reserved_strings``) and reports it with the model, and the
API process checks every user field against it before a job is queued (``check_user_text``).
Inside the worker, ``control_token_in`` is the exact test (the tokenizer itself says whether the
text yields a control token), run as a defence on the text that reaches the model.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from service_kit.errors import InvalidInput

__all__ = ["check_user_text", "control_token_in", "find_reserved", "reserved_strings"]


def reserved_strings(tokenizer: Any) -> tuple[str, ...]:
    """Every string ``tokenizer`` reads as one of its added or special tokens, sorted."""
    found: set[str] = set()
    for token in dict(getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        found.add(str(getattr(token, "content", token)))
    found.update(str(t) for t in getattr(tokenizer, "all_special_tokens", None) or ())
    return tuple(sorted(s for s in found if s.strip()))


@functools.lru_cache(maxsize=8)
def _pattern(reserved: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so the error names the whole token when one contains another.
    ordered = sorted(reserved, key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in ordered))


def find_reserved(text: str, reserved: Sequence[str]) -> str | None:
    """The first reserved string in ``text`` as written or after NFC normalisation (what a Qwen
    tokenizer's normaliser does before matching); None when the text is plain."""
    if not reserved or not text:
        return None
    pattern = _pattern(tuple(reserved))
    for candidate in (text, unicodedata.normalize("NFC", text)):
        found = pattern.search(candidate)
        if found is not None:
            return found.group(0)
    return None


def check_user_text(fields: Iterable[tuple[str, str | None]], reserved: Sequence[str]) -> None:
    """Raise InvalidInput (400) naming the first field, of ``(param, text)`` pairs, that holds
    one of the model's reserved strings."""
    for param, text in fields:
        if text is None:
            continue
        token = find_reserved(text, reserved)
        if token is not None:
            raise InvalidInput(
                f"{param} contains {token!r}, one of the model's control tokens; "
                "user text may not contain them",
                param=param,
            )


def control_token_in(tokenizer: Any, text: str) -> str | None:
    """The first added or special token ``tokenizer`` makes of ``text``, or None: exact, since
    the tokenizer itself decides (its normaliser and its matching of added tokens included)."""
    added = dict(getattr(tokenizer, "added_tokens_decoder", None) or {})
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for token_id in ids:
        if token_id in added or token_id in special:
            token = added.get(token_id)
            return str(getattr(token, "content", token)) if token is not None else str(token_id)
    return None
