"""Editor settings: EDITOR_* environment variables, overridden by command-line flags."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from editor_service.backends.base import BackendSpec
from service_kit.settings import ServiceSettings, split_list

Dtype = Literal["auto", "bfloat16", "float16", "float32"]


class EditorSettings(ServiceSettings):
    """Settings of ``python -m editor_service``."""

    model_config = SettingsConfigDict(env_prefix="EDITOR_", env_ignore_empty=True, extra="ignore")

    port: int = Field(default=8001, ge=0, le=65535)
    model: str = Field(
        default="tiny",
        description="Hugging Face id (e.g. Qwen/Qwen-Image-Edit), a local folder, or a built-in: "
        "tiny, tiny-plus (random tiny models for offline demos and tests: their edits mean "
        "nothing), random-full, random-full-plus (full size, random weights: GPU timing only).",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")
    backend: str = Field(
        default="diffusers",
        description="diffusers, or module:Class of your own EditBackend implementation.",
    )
    devices: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="One worker per entry: cuda:N, N or cpu (comma-separated). "
        "Empty: every visible GPU, else one CPU worker.",
    )
    dtype: Dtype = Field(default="auto", description="auto: bfloat16 on GPUs, float32 on CPU.")
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options for a custom backend, as JSON (EDITOR_BACKEND_OPTIONS='{...}').",
    )

    max_worker_restarts: int = Field(
        default=5,
        ge=0,
        description="A worker that exits more often than this within restart_window_s is given "
        "up on, and the service reports not ready.",
    )
    restart_window_s: float = Field(default=300.0, gt=0)

    @field_validator("devices", mode="before")
    @classmethod
    def _split_devices(cls, value: object) -> object:
        return split_list(value)

    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            backend=self.backend,
            model=self.model,
            revision=self.revision,
            dtype=self.dtype,
            cache_dir=str(self.cache_dir),
            options=dict(self.backend_options),
        )
