"""The editor's faster, lossy modes: FP8 for the transformer and a fixed-schedule step cache.

Both are off by default and change the images (so every answer and run records them). Each is a
library call: torchao's float8 dynamic quantization (what diffusers' TorchAoConfig applies at
load time; applied here after the build, so random-full and LoRA-fused weights get it too) and
diffusers' TaylorSeer cache hook.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from service_kit.models.refusals import ConfigurationRefused

logger = logging.getLogger(__name__)

FP8_GRANULARITIES = ("row", "tensor")

# Qwen-Image's transformer blocks' attention projections and MLPs: the bulk of the FLOPs. Left
# in bf16: the per-block modulation (one token per image), the input/output projections and
# embeddings. Each family names its own (editor_service.families).
QWEN_FP8_LAYERS = r"transformer_blocks\.\d+\.(attn|img_mlp|txt_mlp)\..+"

# torch._scaled_mm's FP8 kernels need Ada (8.9) or Hopper (9.0) and newer.
_FP8_MIN_CAPABILITY = (8, 9)


class UnsupportedOption(ConfigurationRefused):
    """A configured model option cannot be honoured (a value it does not take, or one this
    device or software cannot run): refused at load, and final (the worker is not restarted;
    service_kit.models.refusals)."""


def check_fp8_device(device: str, capability: tuple[int, int] | None) -> None:
    """Refuse FP8 where it cannot run: the CPU, or a GPU older than Ada/Hopper."""
    if not device.startswith("cuda") or capability is None:
        raise UnsupportedOption(
            f"transformer_fp8 needs a CUDA GPU of compute capability "
            f"{_FP8_MIN_CAPABILITY[0]}.{_FP8_MIN_CAPABILITY[1]} or newer (Ada, Hopper); "
            f"this worker's device is {device}. Unset EDITOR_TRANSFORMER_FP8 to run here."
        )
    if capability < _FP8_MIN_CAPABILITY:
        raise UnsupportedOption(
            f"transformer_fp8 needs compute capability 8.9 or newer; {device} has "
            f"{capability[0]}.{capability[1]}"
        )


def quantize_fp8(
    transformer: Any, granularity: str, device: str, layers: str = QWEN_FP8_LAYERS
) -> int:
    """torchao float8 dynamic activation + weight quantization of the blocks' linear layers.

    ``granularity``: ``row`` (a scale per row of weights and per token of activations; closer to
    bf16) or ``tensor`` (one scale per tensor). Returns how many layers were quantized.
    """
    import torch

    if granularity not in FP8_GRANULARITIES:
        raise UnsupportedOption(
            f"transformer_fp8 must be one of {', '.join(FP8_GRANULARITIES)}, not {granularity!r}"
        )
    capability = torch.cuda.get_device_capability(device) if device.startswith("cuda") else None
    check_fp8_device(device, capability)
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            PerTensor,
            quantize_,
        )
    except ImportError as exc:
        raise UnsupportedOption(
            "transformer_fp8 needs torchao (pip install 'editbench-editor[fp8]')"
        ) from exc

    chosen: list[str] = []
    pattern = re.compile(layers)

    def wanted(module: torch.nn.Module, name: str) -> bool:
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name):
            chosen.append(name)
            return True
        return False

    scales = PerRow() if granularity == "row" else PerTensor()
    # Leave the inductor settings alone: torchao's recommended ones turn on coordinate-descent
    # tuning, which makes the worker's compile at start-up minutes longer.
    config = Float8DynamicActivationFloat8WeightConfig(
        granularity=scales, set_inductor_config=False
    )
    quantize_(transformer, config, filter_fn=wanted)
    logger.info("FP8 (%s scales) in %d linear layers of the transformer", granularity, len(chosen))
    return len(chosen)


def enable_step_schedule(transformer: Any, interval: int, warmup: int) -> None:
    """diffusers' TaylorSeer cache on a fixed schedule: ``warmup`` full steps, then one full
    step in every ``interval``; the steps between extrapolate the transformer's output (first
    order Taylor) instead of running its blocks. Which steps run does not depend on the
    weights, so the speed-up measured with random weights is the real one.

    Lite mode: the blocks are skipped on predicted steps and only the output projection's
    result is extrapolated, so the cache holds one tensor per CFG branch, not one per block.
    Each CFG branch (the pipeline's ``cond``/``uncond`` cache contexts) keeps its own state.
    """
    import torch
    from diffusers import TaylorSeerCacheConfig

    config = TaylorSeerCacheConfig(
        cache_interval=interval,
        disable_cache_before_step=warmup,
        max_order=1,
        taylor_factors_dtype=torch.float32,
        use_lite_mode=True,
    )
    transformer.enable_cache(config)
