"""FLUX.1 Kontext (black-forest-labs/FLUX.1-Kontext-dev): guidance-distilled editing.

Its ``guidance_scale`` is an input of the transformer (distilled guidance, one pass a step); true
CFG with a negative prompt is optional (``true_cfg_scale`` > 1, two passes a step). Defaults are
the model card's (28 steps, guidance 2.5). The source is resized to Kontext's preferred ~1 MP
resolution; an output size keeps its aspect at its own area (``max_area``). A mask goes to
``FluxKontextInpaintPipeline`` (same components).
"""

from __future__ import annotations

from typing import Any

from editor_service.families.base import EditorFamily, EditSettings, Parameter


def _call(settings: EditSettings) -> dict[str, Any]:
    cfg = settings.parameters["true_cfg_scale"]
    kwargs: dict[str, Any] = {
        "guidance_scale": settings.parameters["guidance_scale"],
        "true_cfg_scale": cfg,
        "negative_prompt": settings.negative_prompt if cfg > 1.0 else None,
        "num_inference_steps": settings.num_inference_steps,
    }
    if settings.width is not None and settings.height is not None:
        kwargs["width"], kwargs["height"] = settings.width, settings.height
        kwargs["max_area"] = settings.width * settings.height
    return kwargs


FAMILY = EditorFamily(
    name="flux-kontext",
    title="FLUX.1 Kontext",
    pipeline_classes={"FluxKontextPipeline": 1},
    parameters=(
        Parameter(
            "guidance_scale",
            default=2.5,
            minimum=0.0,
            maximum=20.0,
            description="Distilled guidance, an input of the transformer (one pass a step).",
        ),
        Parameter(
            "true_cfg_scale",
            default=1.0,
            minimum=1.0,
            maximum=20.0,
            description="True classifier-free guidance with negative_prompt; 1 (default): off.",
        ),
    ),
    default_steps=28,
    min_steps=1,
    takes_size=True,
    takes_negative_prompt=True,
    # T5's sequence (max_sequence_length 512); CLIP reads the first 77 tokens, as in FLUX.
    prompt_tokenizer="tokenizer_2",
    prompt_token_limit=512,
    call=_call,
    builder="tiny_models.flux_kontext",
    builtins={
        "tiny-kontext": ("tiny", "kontext"),
        "random-full-kontext": ("random-full", "kontext"),
    },
    image_conditioning="its latents join the transformer's sequence beside the ones being denoised",
    # Kontext's own inpainting: the source stays the context image, the unmasked latents are
    # put back after every step, so outside the mask the result is the source's (its VAE
    # reconstruction). It takes every parameter above; its output is its own ~1 MP (no size).
    inpaint_pipelines={"FluxKontextPipeline": "FluxKontextInpaintPipeline"},
    fp8_layers=(
        r"transformer_blocks\.\d+\.(attn|ff|ff_context)\..+"
        r"|single_transformer_blocks\.\d+\.(attn\..+|proj_mlp|proj_out)"
    ),
    hub_ids=("black-forest-labs/FLUX.1-Kontext-dev",),
    honours=frozenset({"lora"}),  # FluxLoraLoaderMixin
    # CLIP and T5-XXL (9.5 GB in bf16 at full size: the one that matters for parking).
    text_encoders=("text_encoder", "text_encoder_2"),
)
