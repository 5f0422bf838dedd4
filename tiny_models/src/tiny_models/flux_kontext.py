"""FLUX.1 Kontext built from configs: the tiny offline pipeline and the full-size random one.

``tiny`` has FLUX's real architecture at toy width (one double and one single block, 2 heads of
16) with CLIP and T5 text encoders of 2 layers and locally made tokenizers
(tiny_models.tokenizer); it is saved and loaded back through ``from_pretrained``. ``full`` is
FLUX.1-Kontext-dev's configuration (the 12 B transformer, CLIP-L, T5-XXL) with random weights,
built on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Scale = Literal["tiny", "full"]

# Bump when the tiny recipe changes, so cached folders built by an older recipe are not reused.
TINY_RECIPE_VERSION = 1

# FLUX.1's scheduler config (black-forest-labs/FLUX.1-Kontext-dev, scheduler/).
SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def vae_config(scale: Scale) -> dict[str, Any]:
    """FLUX's AutoencoderKL: 16 latent channels, factor 8 (four blocks)."""
    common: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 16,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "shift_factor": 0.1159,
        "scaling_factor": 0.3611,
    }
    if scale == "full":
        return {**common, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2}
    # Narrow: encoding the ~1 MP source dominates CPU time.
    return {
        **common,
        "block_out_channels": [8, 8, 16, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
    }


def transformer_config(scale: Scale) -> dict[str, Any]:
    """FluxTransformer2DModel; sum(axes_dims_rope) == attention_head_dim."""
    if scale == "full":
        return {
            "patch_size": 1,
            "in_channels": 64,
            "num_layers": 19,
            "num_single_layers": 38,
            "attention_head_dim": 128,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "pooled_projection_dim": 768,
            "guidance_embeds": True,
            "axes_dims_rope": (16, 56, 56),
        }
    return {
        "patch_size": 1,
        "in_channels": 64,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,  # == T5's d_model
        "pooled_projection_dim": 32,  # == CLIP's hidden size
        "guidance_embeds": True,
        "axes_dims_rope": (4, 6, 6),
    }


def clip_config(scale: Scale, vocab_size: int) -> dict[str, Any]:
    if scale == "full":  # CLIP ViT-L/14's text tower
        return {
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 768,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            # the tokenizer's ids (CLIP finds its pooled token by eos_token_id)
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        }
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
        "max_position_embeddings": 77,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }


def t5_config(scale: Scale, vocab_size: int) -> dict[str, Any]:
    common = {"feed_forward_proj": "gated-gelu", "pad_token_id": 0, "eos_token_id": 1}
    if scale == "full":  # T5-XXL v1.1's encoder
        return {
            **common,
            "vocab_size": 32128,
            "d_model": 4096,
            "d_kv": 64,
            "d_ff": 10240,
            "num_layers": 24,
            "num_heads": 64,
        }
    return {
        **common,
        "vocab_size": vocab_size,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
    }


def build_pipeline(
    scale: Scale, variant: str = "kontext", *, device: str = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """A random-weight FluxKontextPipeline of the real architecture at the given scale."""
    del variant  # one variant
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from service_kit.models.loading import random_weights
    from tiny_models.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    with random_weights(device, dtype):
        transformer: Any = FluxTransformer2DModel(**transformer_config(scale))
        vae: Any = AutoencoderKL(**vae_config(scale))
        clip = CLIPTextModel(CLIPTextConfig(**clip_config(scale, len(clip_tokenizer))))
        t5 = T5EncoderModel(T5Config(**t5_config(scale, len(t5_tokenizer))))
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        vae=vae.eval(),
        text_encoder=clip.eval(),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5.eval(),
        tokenizer_2=t5_tokenizer,
        transformer=transformer.eval(),
    )


def ensure_tiny_folder(cache_dir: Path, variant: str = "kontext") -> Path:
    """Build and save the tiny pipeline once; later calls (and other workers) reuse the folder."""
    from service_kit.models.loading import ensure_built

    return ensure_built(
        cache_dir / f"tiny-flux-kontext-v{TINY_RECIPE_VERSION}",
        "model_index.json",
        lambda staging: build_pipeline("tiny", variant).save_pretrained(staging),
        {"recipe": "tiny", "variant": variant, "version": TINY_RECIPE_VERSION},
    )
