"""A random LoRA for the tiny Qwen-Image transformer, saved the way trainers save one."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline, QwenImageEditPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def make_tiny_lora(model_folder: Path, out: Path, seed: int = 0) -> Path:
    """Train nothing: attach a rank-4 adapter with random A and B, save its weights."""
    torch.manual_seed(seed)
    pipe = DiffusionPipeline.from_pretrained(model_folder)
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        init_lora_weights=False,  # random, so the adapter changes the output
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    pipe.transformer.add_adapter(config)
    QwenImageEditPipeline.save_lora_weights(
        out, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    return out / WEIGHT_NAME
