"""LongCat-Image-Edit built from configs: the tiny offline pipeline and the full-size random one.

Its text encoder is Qwen2.5-VL, built exactly as Qwen-Image-Edit's (tiny_models.qwen_image_edit:
the same configs and locally trained tokenizer); the transformer is LongCat's FLUX-style one and
the VAE FLUX's. ``tiny`` is saved and loaded back through ``from_pretrained``; ``full`` is the
real configuration with random weights, built on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tiny_models import flux_kontext, qwen_image_edit

if TYPE_CHECKING:
    import torch

Scale = Literal["tiny", "full"]

# Bump when the tiny recipe changes, so cached folders built by an older recipe are not reused.
TINY_RECIPE_VERSION = 1


def transformer_config(scale: Scale) -> dict[str, Any]:
    """LongCatImageTransformer2DModel: the diffusers defaults are the real model."""
    if scale == "full":
        return {}
    # sum(axes_dims_rope) == attention_head_dim; joint/pooled dims == the text encoder's hidden.
    return {
        "patch_size": 1,
        "in_channels": 64,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 64,
        "pooled_projection_dim": 64,
        "axes_dims_rope": [4, 6, 6],
    }


def build_pipeline(
    scale: Scale,
    variant: str = "longcat-edit",
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Any:
    """A random-weight LongCatImageEditPipeline of the real architecture at the given scale."""
    del variant  # one variant
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        LongCatImageEditPipeline,
        LongCatImageTransformer2DModel,
    )
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from service_kit.models.loading import random_weights
    from tiny_models.tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer(qwen3=False)
    ids = qwen_image_edit.special_ids(tokenizer)
    with random_weights(device, dtype):
        transformer: Any = LongCatImageTransformer2DModel(**transformer_config(scale))
        vae: Any = AutoencoderKL(**flux_kontext.vae_config(scale))
        text_encoder = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(**qwen_image_edit.text_encoder_config(scale, ids))
        )
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**qwen_image_edit.IMAGE_PROCESSOR),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    return LongCatImageEditPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**flux_kontext.SCHEDULER_CONFIG),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_processor=processor,
        transformer=transformer.eval(),
    )


def ensure_tiny_folder(cache_dir: Path, variant: str = "longcat-edit") -> Path:
    """Build and save the tiny pipeline once; later calls (and other workers) reuse the folder."""
    from service_kit.models.loading import ensure_built

    return ensure_built(
        cache_dir / f"tiny-longcat-image-edit-v{TINY_RECIPE_VERSION}",
        "model_index.json",
        lambda staging: build_pipeline("tiny", variant).save_pretrained(staging),
        {"recipe": "tiny", "variant": variant, "version": TINY_RECIPE_VERSION},
    )
