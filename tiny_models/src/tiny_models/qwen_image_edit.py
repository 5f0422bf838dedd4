"""Qwen-Image-Edit built from configs: the tiny offline model and the full-size random one.

``tiny`` is a random-weight pipeline of the real architecture (2 layers, 16-64 wide) with a locally
trained tokenizer; it is saved to a folder and loaded back through the normal ``from_pretrained``
path, so the service exercises exactly the code real weights go through. ``random-full`` uses the
real configs at full size with random bf16 weights, built straight on the GPU, for performance
work without a 40 GB download (timing does not depend on weight values).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Scale = Literal["tiny", "full"]
Variant = Literal["edit", "edit-plus"]

# Bump when the tiny recipe changes, so cached folders built by an older recipe are not reused.
TINY_RECIPE_VERSION = 2  # 2: <think>, <tool_call>... are added tokens, as in Qwen's

# The real scheduler config of Qwen/Qwen-Image-Edit.
SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Qwen2.5-VL's image processor settings (also LongCat-Image-Edit's).
IMAGE_PROCESSOR: dict[str, Any] = {
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": _CLIP_MEAN,
    "image_std": _CLIP_STD,
    "min_pixels": 3136,
    "max_pixels": 12845056,
}


def transformer_config(scale: Scale) -> dict[str, Any]:
    """QwenImageTransformer2DModel: the diffusers defaults are the real model (20.4 B params)."""
    if scale == "full":
        return {}
    # sum(axes_dims_rope) == attention_head_dim; in_channels == 4 * z_dim; out_channels == z_dim;
    # joint_attention_dim == the text encoder's hidden size.
    return {
        "patch_size": 2,
        "in_channels": 64,
        "out_channels": 16,
        "num_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 64,
        "axes_dims_rope": (4, 6, 6),
        "guidance_embeds": False,
    }


def vae_config(scale: Scale) -> dict[str, Any]:
    """AutoencoderKLQwenImage: the defaults are the real VAE."""
    if scale == "full":
        return {}
    # Three downsamples (factor 8) as in the real VAE; narrow, because encoding the ~1 MP
    # condition image dominates CPU time.
    return {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True, True],
    }


def text_encoder_config(scale: Scale, token_ids: dict[str, int]) -> dict[str, Any]:
    """Qwen2.5-VL: the 7B text encoder for ``full``; 2 layers, 64 wide for ``tiny``.

    ``token_ids`` are the tokenizer's ids of the vision tokens and specials: the config must
    agree with the tokenizer it is used with.
    """
    ids = {
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
    }
    specials = {"bos_token_id": token_ids["<|endoftext|>"], "eos_token_id": token_ids["<|im_end|>"]}
    if scale == "full":
        text = {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [16, 24, 24],
                "rope_theta": 1000000.0,
            },
            **specials,
        }
        vision = {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "hidden_act": "silu",
        }
    else:
        text = {
            "vocab_size": token_ids["__vocab_size__"],
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            # sum(mrope_section) == head_dim / 2 == 8
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [2, 3, 3],
                "rope_theta": 1e6,
            },
            **specials,
        }
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            # one windowed and one full-attention block, as in the real encoder
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        }
    return {"text_config": text, "vision_config": vision, "tie_word_embeddings": False, **ids}


def special_ids(tokenizer: Any) -> dict[str, int]:
    from tiny_models.tokenizer import tiny_vocab_size

    names = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    names += ["<|endoftext|>", "<|im_end|>"]
    ids = {name: int(tokenizer.convert_tokens_to_ids(name)) for name in names}
    ids["__vocab_size__"] = tiny_vocab_size(tokenizer)
    return ids


def build_pipeline(
    scale: Scale, variant: Variant, *, device: str = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """Build a random-weight pipeline of the real architecture at the given scale.

    Weights are created directly on ``device`` in ``dtype`` (the full-size transformer is 41 GB
    in bf16; it never passes through host memory).
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
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
    with random_weights(device, dtype):
        transformer: Any = QwenImageTransformer2DModel(**transformer_config(scale))
        vae: Any = AutoencoderKLQwenImage(**vae_config(scale))
        text_encoder = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(**text_encoder_config(scale, special_ids(tokenizer)))
        )
    image_processor = Qwen2VLImageProcessor(**IMAGE_PROCESSOR)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    pipeline_class = QwenImageEditPlusPipeline if variant == "edit-plus" else QwenImageEditPipeline
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer.eval(),
    )


def ensure_tiny_folder(cache_dir: Path, variant: Variant) -> Path:
    """Build and save the tiny pipeline once; later calls (and other workers) reuse the folder."""
    from service_kit.models.loading import ensure_built

    return ensure_built(
        cache_dir / f"tiny-qwen-image-{variant}-v{TINY_RECIPE_VERSION}",
        "model_index.json",
        lambda staging: build_pipeline("tiny", variant).save_pretrained(staging),
        {"recipe": "tiny", "variant": variant, "version": TINY_RECIPE_VERSION},
    )
