"""LongCat-Image-Edit (meituan-longcat/LongCat-Image-Edit): a Qwen2.5-VL text encoder and a
FLUX-style transformer, with classifier-free guidance.

Defaults are diffusers' (50 steps, guidance 4.5). The output is always ~1 MP at the source's
aspect: the pipeline takes no output size.
"""

from __future__ import annotations

from typing import Any

from editor_service.families.base import EditorFamily, EditSettings, Parameter


def _call(settings: EditSettings) -> dict[str, Any]:
    guidance = settings.parameters["guidance_scale"]
    return {
        "guidance_scale": guidance,
        "negative_prompt": settings.negative_prompt if guidance > 1.0 else None,
        "num_inference_steps": settings.num_inference_steps,
    }


FAMILY = EditorFamily(
    name="longcat-image-edit",
    title="LongCat-Image-Edit",
    pipeline_classes={"LongCatImageEditPipeline": 1},
    parameters=(
        Parameter(
            "guidance_scale",
            default=4.5,
            minimum=1.0,
            maximum=20.0,
            description="Classifier-free guidance with negative_prompt (two passes a step); "
            "1 turns it off.",
        ),
    ),
    default_steps=50,
    min_steps=1,
    takes_size=False,
    takes_negative_prompt=True,
    # The pipeline pads or cuts the instruction to 512 tokens (tokenizer_max_length).
    prompt_tokenizer="tokenizer",
    prompt_token_limit=512,
    call=_call,
    builder="tiny_models.longcat_image_edit",
    builtins={
        "tiny-longcat": ("tiny", "longcat-edit"),
        "random-full-longcat": ("random-full", "longcat-edit"),
    },
    image_conditioning=(
        "its latents join the transformer's sequence and Qwen2.5-VL reads it (at half size) "
        "with the instruction"
    ),
    fp8_layers=(
        r"transformer_blocks\.\d+\.(attn|ff|ff_context)\..+"
        r"|single_transformer_blocks\.\d+\.(attn\..+|proj_mlp|proj_out)"
    ),
    hub_ids=("meituan-longcat/LongCat-Image-Edit",),
    # No fused attention (Qwen-Image's kernel), and no LoRA: diffusers 0.42.1's
    # LongCatImageEditPipeline has no LoRA loader.
    honours=frozenset(),
    # diffusers 0.42.1's LongCatImageEditPipeline takes no callback_on_step_end, but skips the
    # steps left once its interrupt flag is set (its `interrupt` property, read every step).
    stop_signal="transformer_hook",
)
