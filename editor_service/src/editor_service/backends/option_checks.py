"""The diffusers backend's options, checked before anything is built or loaded.

The settings type every option they set; a spec built elsewhere (a test, a bench script, a
backend of one's own that wraps this one) may not be. A value of the wrong kind, out of its
range or not one of its choices is refused here (UnsupportedOption: final, the worker is not
restarted), naming the option and its setting, instead of failing as a TypeError after minutes
of loading weights and being restarted as if it were transient.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from editor_service.backends.speed_modes import FP8_GRANULARITIES, UnsupportedOption

# Option -> (kind, least value); None (unset) is always allowed.
_NUMBERS: dict[str, tuple[type, float]] = {
    "lora_scale": (float, -math.inf),  # negative scales are LoRA arithmetic, not errors
    "step_cache": (float, 0.0),
    "step_cache_interval": (int, 2),
    "step_cache_warmup": (int, 1),
}
_FLAGS = ("compile", "fused_attention", "park_text_encoder", "deterministic")
_TEXTS = ("lora", "lora_weight_name", "attention_backend")


def _named(option: str) -> str:
    return f"{option} (EDITOR_{option.upper()})"


def check_options(options: dict[str, Any]) -> None:
    """UnsupportedOption for the first option the backend cannot take as set."""
    for option, (kind, least) in _NUMBERS.items():
        value = options.get(option)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or (kind is int and not isinstance(value, int)):
            what = "a whole number" if kind is int else "a finite number"
            raise UnsupportedOption(f"{_named(option)} must be {what}, not {value!r}")
        if value < least:
            raise UnsupportedOption(f"{_named(option)} must be at least {least}, not {value!r}")
    for option in _FLAGS:
        value = options.get(option)
        if value is not None and not isinstance(value, bool):
            raise UnsupportedOption(f"{_named(option)} must be true or false, not {value!r}")
    for option in _TEXTS:
        value = options.get(option)
        if value is not None and not isinstance(value, str):
            raise UnsupportedOption(f"{_named(option)} must be text, not {value!r}")
    lora = options.get("lora")
    if lora and lora.startswith((".", "/", "~")) and not Path(lora).expanduser().exists():
        raise UnsupportedOption(f"{_named('lora')}: {lora} does not exist")  # a hub id may
    fp8 = options.get("transformer_fp8")
    if fp8 and fp8 not in FP8_GRANULARITIES:
        raise UnsupportedOption(
            f"{_named('transformer_fp8')} must be one of {', '.join(FP8_GRANULARITIES)}, "
            f"not {fp8!r}"
        )
    if options.get("step_cache") and options.get("step_cache_interval"):
        raise UnsupportedOption(
            "step_cache and step_cache_interval are two step caches: choose one"
        )
    backend = options.get("attention_backend")
    if backend:
        from diffusers.models.attention_dispatch import AttentionBackendName

        names = sorted(b.value for b in AttentionBackendName)
        if backend.lower() not in names:
            raise UnsupportedOption(
                f"{_named('attention_backend')} must be one of diffusers' attention backends "
                f"({', '.join(names)}), not {backend!r}"
            )
