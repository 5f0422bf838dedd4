"""Reward settings: REWARD_* environment variables, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from reward_service.backends.base import BackendSpec
from service_kit.devices import normalize_device, resolve_devices
from service_kit.settings import ServiceSettings

Dtype = Literal["auto", "bfloat16", "float16", "float32"]


class RewardSettings(ServiceSettings):
    """Settings of ``python -m reward_service``."""

    model_config = SettingsConfigDict(env_prefix="REWARD_", env_ignore_empty=True, extra="ignore")

    port: int = Field(default=8002, ge=0, le=65535)
    model: str = Field(
        default="tiny",
        description="Hugging Face id (e.g. Qwen/Qwen3-VL-30B-A3B-Instruct), a local folder, or a "
        "built-in: tiny, tiny-moe (random tiny Qwen3-VL judges for offline demos and tests: "
        "their scores mean nothing), random-full (Qwen3-VL-30B-A3B's architecture with random "
        "weights: GPU timing only).",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")
    backend: str = Field(
        default="transformers",
        description="transformers, or module:Class of your own JudgeBackend implementation.",
    )
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend options as JSON, e.g. REWARD_BACKEND_OPTIONS="
        '\'{"attn_implementation": "flash_attention_2"}\'.',
    )
    device: str = Field(
        default="auto", description="cuda:N, N or cpu. auto: the first visible GPU, else the CPU."
    )
    dtype: Dtype = Field(default="auto", description="auto: bfloat16 on GPUs, float32 on CPU.")
    max_batch_size: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="Most questions (one per sub-score of an item) in one forward pass.",
    )
    max_wait_s: float = Field(
        default=0.01,
        ge=0,
        le=10,
        description="Longest a question waits for others to share its forward pass.",
    )
    queue_capacity: int = Field(
        default=1024,
        ge=1,
        description="Questions that may wait for the model; beyond it requests get 429.",
    )
    protocols_dir: Path | None = Field(
        default=None,
        description="Folder of your own judge protocols (*.yaml), offered beside the built-in "
        "viescore and single.",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return value if value.strip().lower() == "auto" else normalize_device(value)

    def resolve_device(self) -> str:
        """The device to load on; ``auto`` asks a subprocess (the API never imports torch)."""
        if self.device.strip().lower() == "auto":
            return resolve_devices([])[0]
        return self.device

    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            backend=self.backend,
            model=self.model,
            revision=self.revision,
            dtype=self.dtype,
            cache_dir=str(self.cache_dir),
            options=dict(self.backend_options),
        )
