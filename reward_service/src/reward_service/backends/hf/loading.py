"""Loading a Qwen-VL-family judge and its processor through transformers.

From a hub id, a local folder or a built-in source (``tiny``, ``tiny-moe``, ``random-full``: built
by tiny_models.qwen3_vl, imported only for them). The processor pads on the left, so every prompt
ends at the last position and the next token is the answer's first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reward_service.backends.base import BackendSpec, InvalidOption, LoadedModel
from service_kit.models.dtypes import resolve_dtype
from service_kit.models.loading import RANDOM_REVISION, model_folder
from service_kit.models.sources import ModelSource, SourceKind

logger = logging.getLogger(__name__)

BUILTIN_SOURCES: dict[str, tuple[SourceKind, str]] = {
    "tiny": ("tiny", "dense"),
    "tiny-moe": ("tiny", "moe"),
    "random-full": ("random-full", "moe"),
}


def attention_option(options: dict[str, Any]) -> str:
    """``attn_implementation`` (default ``sdpa``): one transformers has, or a hub kernel
    (``org/repo``); anything else is refused before the model is built."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    value = options.get("attn_implementation", "sdpa")
    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if not isinstance(value, str) or (value not in known and "/" not in value):
        raise InvalidOption(f"attn_implementation must be one of {', '.join(known)}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Loaded:
    model: Any
    processor: Any
    info: LoadedModel


def load_judge(spec: BackendSpec, source: ModelSource, device: str) -> Loaded:
    """The model in eval mode on ``device`` and its processor."""
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor

    transformers.utils.logging.disable_progress_bar()
    dtype = resolve_dtype(spec.dtype, device)
    attn = attention_option(spec.options)
    variant: Literal["dense", "moe"] = "moe" if source.variant == "moe" else "dense"
    model: Any
    processor: Any
    started = time.perf_counter()
    if source.kind == "random-full":
        from tiny_models.qwen3_vl import build_model

        model, processor = build_model("full", "moe", device=device, dtype=dtype)
        model.set_attn_implementation(attn)
        revision: str | None = RANDOM_REVISION
    else:

        def build_tiny() -> Path:
            from tiny_models.qwen3_vl import ensure_tiny_folder

            return ensure_tiny_folder(Path(spec.cache_dir), variant)

        folder, revision = model_folder(source, spec.revision, build_tiny)
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                folder, dtype=dtype, attn_implementation=attn
            )
        except ImportError as exc:  # flash_attention_2 without flash-attn: no restart installs it
            raise InvalidOption(
                f"{source.name} with attn_implementation={attn!r} needs a package this "
                f"environment lacks: {exc}"
            ) from None
        model.to(device)
        processor = AutoProcessor.from_pretrained(folder)
    model.eval()
    processor.tokenizer.padding_side = "left"
    logger.info(
        "loaded judge %s (%s) on %s as %s in %.1fs",
        source.name,
        type(model).__name__,
        device,
        dtype,
        time.perf_counter() - started,
    )
    details = {"attn_implementation": attn}
    info = LoadedModel.of(source, revision, model, dtype, processor.tokenizer, details=details)
    return Loaded(model, processor, info)
