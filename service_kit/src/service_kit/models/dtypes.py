"""The model dtype a service setting names, resolved for a device (imports torch lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service_kit.models.refusals import ConfigurationRefused

if TYPE_CHECKING:
    import torch


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on accelerators, float32 on the CPU."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigurationRefused(f"dtype must be auto or a torch dtype (bfloat16), not {name!r}")
    return dtype
