"""Editor options that only some families honour, and the refusal of one the family cannot.

An option set for a model whose family cannot honour it is refused, never silently ignored: in
the settings, before anything starts, when the model names its family (a built-in or a known hub
id), else by the backend once the model folder says its pipeline, before the weights load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from editor_service.families.base import EditorFamily
from editor_service.families.registry import FAMILIES

# Option (an EditorSettings field, and the backend's option name) -> what it is, for messages.
FAMILY_OPTIONS: dict[str, str] = {
    "fused_attention": "Qwen-Image's fused joint-attention kernel (editor_service.backends."
    "qwen_kernels), written for QwenImageTransformer2DModel's attention blocks",
    "lora": "a LoRA fused through the pipeline's diffusers LoRA loader",
}


def unhonoured_options(family: EditorFamily, options: Mapping[str, Any]) -> list[str]:
    """The family-dependent options set in ``options`` that ``family`` cannot honour."""
    return [o for o in FAMILY_OPTIONS if options.get(o) and o not in family.honours]


def option_refusal(option: str, family: EditorFamily, model: str) -> str:
    """Why ``option`` is refused for ``model`` of ``family``: what the option is, which families
    honour it, and how to go on."""
    honour = ", ".join(f.title for f in FAMILIES if option in f.honours) or "none"
    variable = f"EDITOR_{option.upper()}"
    return (
        f"{option} ({variable}, --{option.replace('_', '-')}) is {FAMILY_OPTIONS[option]}; "
        f"{model} is {family.title} (family {family.name!r}), which cannot honour it. "
        f"Families that do: {honour}. Unset {variable} to serve this model."
    )
