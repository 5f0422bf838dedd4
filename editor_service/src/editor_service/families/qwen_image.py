"""Qwen-Image-Edit, -2509 and -2511 (Plus: several images), with true classifier-free guidance."""

from __future__ import annotations

from typing import Any

from editor_service.families.base import EditorFamily, EditSettings, Parameter

# Images one Edit Plus edit takes (Qwen-Image-Edit-2509 is trained on 1 to 3).
EDIT_PLUS_MAX_IMAGES = 3


def _call(settings: EditSettings) -> dict[str, Any]:
    cfg = settings.parameters["true_cfg_scale"]
    kwargs: dict[str, Any] = {
        "negative_prompt": settings.negative_prompt if cfg > 1.0 else None,
        "true_cfg_scale": cfg,
        "num_inference_steps": settings.num_inference_steps,
    }
    if settings.width is not None and settings.height is not None:
        kwargs["width"], kwargs["height"] = settings.width, settings.height
    return kwargs


FAMILY = EditorFamily(
    name="qwen-image-edit",
    title="Qwen-Image-Edit",
    pipeline_classes={
        "QwenImageEditPipeline": 1,
        "QwenImageEditPlusPipeline": EDIT_PLUS_MAX_IMAGES,
    },
    parameters=(
        Parameter(
            "true_cfg_scale",
            default=4.0,
            minimum=1.0,
            maximum=20.0,
            description="True classifier-free guidance (with negative_prompt); 1 turns it off.",
        ),
    ),
    default_steps=50,
    # One step divides by zero in Qwen-Image's scheduler (shift_terminal): the output is NaN.
    min_steps=2,
    takes_size=True,
    takes_negative_prompt=True,
    # Qwen-Image's own cap (diffusers refuses max_sequence_length above it).
    prompt_tokenizer="tokenizer",
    prompt_token_limit=1024,
    call=_call,
    builder="tiny_models.qwen_image_edit",
    builtins={
        "tiny": ("tiny", "edit"),
        "tiny-plus": ("tiny", "edit-plus"),
        "random-full": ("random-full", "edit"),
        "random-full-plus": ("random-full", "edit-plus"),
    },
    image_conditioning=(
        "its latents join the transformer's sequence and Qwen2.5-VL reads it with the instruction"
    ),
    inpaint_pipelines={"QwenImageEditPipeline": "QwenImageEditInpaintPipeline"},
    # The blocks' attention projections and MLPs: the bulk of the FLOPs. Left in bf16: the
    # per-block modulation, the input/output projections and embeddings.
    fp8_layers=r"transformer_blocks\.\d+\.(attn|img_mlp|txt_mlp)\..+",
    hub_ids=("Qwen/Qwen-Image-Edit", "Qwen/Qwen-Image-Edit-2509", "Qwen/Qwen-Image-Edit-2511"),
    honours=frozenset({"fused_attention", "lora"}),
)
