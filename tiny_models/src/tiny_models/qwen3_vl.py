"""Qwen3-VL judges built from configs: the tiny offline models and the full-size random one.

``tiny`` (dense) and ``tiny-moe`` are random-weight Qwen3-VL models of the real architecture
(3 text layers, 64 wide) with a locally trained tokenizer, saved to a folder and loaded back
through ``from_pretrained``, so the service runs exactly the code real weights go through.
``random-full`` is Qwen3-VL-30B-A3B's real configuration with random bf16 weights, built straight
on the GPU, for performance work without a 60 GB download (timing does not depend on weights).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

Scale = Literal["tiny", "full"]
Variant = Literal["dense", "moe"]

# Bump when the tiny recipe changes, so cached folders built by an older recipe are not reused.
TINY_RECIPE_VERSION = 2  # 2: <think>, <tool_call>... are added tokens, as in Qwen's
# Random weights at the real 0.02 make every next-token distribution nearly uniform: all scores
# would sit near 4.5 and greedy text would be one repeated token. A wide init makes the tiny
# judge's answers depend on its inputs, which is what the tests need to see.
TINY_INIT_STD = 0.5

# The real Qwen3-VL image processor settings (patch 16, merge 2; 64K..16M pixels, mean/std 0.5).
_IMAGE_PROCESSOR: dict[str, Any] = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
}
_SPECIAL_TOKENS = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|endoftext|>",
    "<|im_end|>",
)


def chat_template() -> str:
    """Our own minimal template, rendering like Qwen3-VL-Instruct's for text and images."""
    return resources.files("tiny_models").joinpath("qwen3_vl_chat_template.jinja").read_text()


def text_config(scale: Scale, variant: Variant, ids: dict[str, int]) -> dict[str, Any]:
    """The language model's config. ``ids`` holds the tokenizer's special-token ids."""
    specials = {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    if scale == "full":
        if variant != "moe":
            raise ValueError("random-full is Qwen3-VL-30B-A3B, a mixture of experts")
        return {
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 48,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
                "rope_theta": 5_000_000.0,
            },
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 768,
            "decoder_sparse_step": 1,
            "norm_topk_prob": True,
            "mlp_only_layers": [],
            "tie_word_embeddings": False,
            **specials,
        }
    config: dict[str, Any] = {
        "vocab_size": ids["__vocab_size__"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,  # deepstack injects into the first 3 layers
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 262144,
        # sum(mrope_section) == head_dim / 2
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
            "rope_theta": 5_000_000.0,
        },
        "initializer_range": TINY_INIT_STD,
        **specials,
    }
    if variant == "moe":
        config |= {
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "decoder_sparse_step": 1,
            "norm_topk_prob": True,
            "mlp_only_layers": [],
            "tie_word_embeddings": False,
        }
    return config


def vision_config(scale: Scale) -> dict[str, Any]:
    """The vision tower's config; ``out_hidden_size`` equals the text hidden size."""
    shared = {
        "hidden_act": "gelu_pytorch_tanh",
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
    }
    if scale == "full":
        return shared | {
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [8, 16, 24],
        }
    return shared | {
        "depth": 4,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "deepstack_visual_indexes": [0, 1, 2],
        "initializer_range": TINY_INIT_STD,
    }


def model_config(scale: Scale, variant: Variant, ids: dict[str, int]) -> Any:
    """A Qwen3VLConfig (dense) or Qwen3VLMoeConfig whose token ids are the tokenizer's."""
    from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

    config_class = Qwen3VLMoeConfig if variant == "moe" else Qwen3VLConfig
    return config_class(
        text_config=text_config(scale, variant, ids),
        vision_config=vision_config(scale),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # As released: the small dense models tie embeddings, the MoE models do not.
        tie_word_embeddings=variant == "dense",
    )


def _token_ids(tokenizer: Any) -> dict[str, int]:
    from tiny_models.tokenizer import tiny_vocab_size

    ids = {name: int(tokenizer.convert_tokens_to_ids(name)) for name in _SPECIAL_TOKENS}
    ids["__vocab_size__"] = tiny_vocab_size(tokenizer)
    return ids


def build_processor(tokenizer: Any) -> ProcessorMixin:
    """Qwen3VLProcessor with the real image/video settings and our chat template."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    processor: ProcessorMixin = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**_IMAGE_PROCESSOR),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=chat_template(),
    )
    return processor


def build_model(
    scale: Scale, variant: Variant, *, device: str = "cpu", dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A random-weight model of the real architecture and its processor.

    Weights are created directly on ``device`` in ``dtype``: the full-size model is 62 GB in
    bf16 and never passes through host memory.
    """
    from transformers import (
        GenerationConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeForConditionalGeneration,
    )

    from service_kit.models.loading import random_weights
    from tiny_models.tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer(qwen3=True)
    ids = _token_ids(tokenizer)
    config = model_config(scale, variant, ids)
    model_class = (
        Qwen3VLMoeForConditionalGeneration if variant == "moe" else Qwen3VLForConditionalGeneration
    )
    with random_weights(device, dtype):
        model = model_class(config)
    model.eval()  # type: ignore[no-untyped-call]
    # The released Instruct generation settings; the service always decodes greedily anyway.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        do_sample=True,
        top_k=20,
        top_p=0.8,
        temperature=0.7,
    )
    return model, build_processor(tokenizer)


def ensure_tiny_folder(cache_dir: Path, variant: Variant) -> Path:
    """Build and save the tiny judge once; later calls (and other processes) reuse the folder."""
    from service_kit.models.loading import ensure_built

    def save(staging: Path) -> None:
        model, processor = build_model("tiny", variant)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)

    return ensure_built(
        cache_dir / f"tiny-qwen3-vl-{variant}-v{TINY_RECIPE_VERSION}",
        "config.json",
        save,
        {"recipe": "tiny-qwen3-vl", "variant": variant, "version": TINY_RECIPE_VERSION},
    )
