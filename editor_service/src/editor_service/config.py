"""Editor settings: EDITOR_* environment variables, overridden by command-line flags."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from editor_service.backends.base import BackendSpec
from editor_service.families.options import option_refusal, unhonoured_options
from editor_service.families.registry import FAMILIES, builtin_sources, family_of_model
from service_kit.settings import ModelServiceSettings

# What --help lists as models: the registry's families, so a new family appears there too.
_HUB_EXAMPLES = ", ".join(f.hub_ids[0] for f in FAMILIES if f.hub_ids)


def _builtins(kind: str) -> str:
    return ", ".join(name for name, (k, _) in builtin_sources().items() if k == kind)


class EditorSettings(ModelServiceSettings):
    """Settings of ``python -m editor_service``."""

    model_config = SettingsConfigDict(env_prefix="EDITOR_", env_ignore_empty=True, extra="ignore")

    port: int = Field(default=8001, ge=0, le=65535)
    model: str = Field(
        default="tiny",
        description=(
            f"Hugging Face id of a hosted family's model (e.g. {_HUB_EXAMPLES}), a local "
            f"folder, or a built-in: {_builtins('tiny')} (random tiny models for offline demos "
            f"and tests: their edits mean nothing), {_builtins('random-full')} (full size, "
            "random weights: GPU timing only)."
        ),
    )
    backend: str = Field(
        default="diffusers",
        description="diffusers, or module:Class of your own EditBackend implementation.",
    )
    deterministic: bool = Field(
        default=True,
        description="Deterministic torch kernels in the workers: the same request and seed give "
        "a bit-identical image on any worker of the same GPU model and software.",
    )
    compile: bool | None = Field(
        default=None,
        description="Regional torch.compile of the transformer blocks, once at worker start and "
        "at each load after a hand-over (with warm-up edits), never per request. Default: on for "
        "CUDA devices, off on the CPU.",
    )
    fused_attention: bool = Field(
        default=False,
        description="Qwen-Image's joint attention with qk-norm and RoPE fused into one pass "
        "that writes the attention kernel's own layout (editor_service.backends.qwen_kernels): "
        "the same images within rounding, but no faster than diffusers' processor compiled on "
        "an H100 (docs/PERFORMANCE.md). Off by default. Qwen-Image-Edit only: refused at start "
        "for a model of another family.",
    )
    attention_backend: str | None = Field(
        default=None,
        description="diffusers attention backend for the transformer, e.g. _native_cudnn, "
        "_native_flash, flash, _flash_3 (default: PyTorch's choice).",
    )
    park_text_encoder: bool = Field(
        default=False,
        description="Keep the text encoders' linear layers (every one the family has: FLUX.1 "
        "Kontext's CLIP and T5) in pinned host memory, each copied to the GPU for its own calls "
        "only: peak GPU memory down by about the text encoders' size (15.4 GiB for "
        "Qwen-Image-Edit), one host-to-device copy of them per edit added "
        "(docs/PERFORMANCE.md). The same images.",
    )
    lora: str | None = Field(
        default=None,
        description="A LoRA to fuse into the transformer: a local folder or file, or a hub id "
        "(e.g. lightx2v/Qwen-Image-Lightning for few-step editing). Refused at start for a "
        "family whose pipeline has no diffusers LoRA loader.",
    )
    lora_weight_name: str | None = Field(
        default=None, description="The .safetensors file inside the LoRA folder or repo."
    )
    lora_scale: float = Field(default=1.0, description="Strength of the fused LoRA.")
    step_cache: float | None = Field(
        default=None,
        gt=0,
        description="First-block cache threshold (e.g. 0.05-0.12): skip the rest of the "
        "transformer on steps whose first block barely changed. Faster, slightly different output; "
        "how many steps it skips depends on the weights.",
    )
    step_cache_interval: int | None = Field(
        default=None,
        ge=2,
        description="Fixed-schedule step cache (diffusers' TaylorSeer): after step_cache_warmup "
        "full steps, the transformer runs in full on one step in every N and its output is "
        "extrapolated on the others. The speed-up does not depend on the weights; the output "
        "changes. Off by default.",
    )
    step_cache_warmup: int = Field(
        default=3, ge=1, description="Full steps before the fixed-schedule step cache starts."
    )
    transformer_fp8: Literal["row", "tensor"] | None = Field(
        default=None,
        description="FP8 (torchao float8 dynamic activation and weight) in the transformer "
        "blocks' linear layers, with a scale per row or per tensor. Needs a CUDA GPU of compute "
        "capability 8.9+ (Ada, Hopper) and torchao; refused at start-up elsewhere. Faster "
        "(with compile), different output. Off by default.",
    )

    @model_validator(mode="after")
    def _one_step_cache(self) -> Self:
        if self.step_cache is not None and self.step_cache_interval is not None:
            raise ValueError("step_cache and step_cache_interval are two step caches: choose one")
        return self

    @model_validator(mode="after")
    def _options_the_family_honours(self) -> Self:
        """An option the model's family cannot honour (fused_attention on FLUX.1 Kontext) is
        refused here when the model setting names its family; else the backend refuses it at
        load, once the model folder names its pipeline."""
        family = family_of_model(self.model)
        if family is not None:
            options = self.backend_spec().options
            for option in unhonoured_options(family, options):
                raise ValueError(option_refusal(option, family, self.model))
        return self

    @model_validator(mode="after")
    def _fp8_on_the_devices_named(self) -> Self:
        """FP8 on devices named as not CUDA GPUs is refused here, before anything starts; on the
        default devices (every visible GPU, else the CPU) each worker refuses it before its
        weights load (a GPU older than 8.9 too): final, exit 78 either way."""
        if self.transformer_fp8 and any(not d.startswith("cuda") for d in self.devices):
            raise ValueError(
                "transformer_fp8 needs CUDA GPUs (compute capability 8.9+); the editor's devices "
                f"are {', '.join(self.devices)}. Unset EDITOR_TRANSFORMER_FP8 to run there."
            )
        return self

    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            backend=self.backend,
            model=self.model,
            revision=self.revision,
            dtype=self.dtype,
            cache_dir=str(self.cache_dir),
            options={
                **self.backend_options,
                "deterministic": self.deterministic,
                "compile": self.compile,
                "fused_attention": self.fused_attention,
                "park_text_encoder": self.park_text_encoder,
                "attention_backend": self.attention_backend,
                "lora": self.lora,
                "lora_weight_name": self.lora_weight_name,
                "lora_scale": self.lora_scale,
                "step_cache": self.step_cache,
                "step_cache_interval": self.step_cache_interval,
                "step_cache_warmup": self.step_cache_warmup,
                "transformer_fp8": self.transformer_fp8,
            },
        )
