"""Reward settings: REWARD_* environment variables, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from reward_service.backends.base import BackendSpec
from reward_service.backends.openai_endpoint import OPTION as OPENAI_OPTION
from reward_service.backends.openai_endpoint import EndpointConfig, url_refusal
from service_kit.settings import ModelServiceSettings


class RewardSettings(ModelServiceSettings):
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
    backend: str = Field(
        default="transformers",
        description="transformers; openai (a judge behind an OpenAI-compatible chat completions "
        "endpoint: REWARD_OPENAI_BASE_URL, REWARD_MODEL names its model); or module:Class of "
        "your own JudgeBackend implementation.",
    )
    deterministic: bool = Field(
        default=False,
        description="Deterministic mode: every item is run through the model on its own, so its "
        "scores are bit-identical whatever else is batched with it (same GPU model and "
        "software); costs throughput (docs/PERFORMANCE.md). Answers say whether it was on.",
    )
    max_batch_images: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Most images in one forward pass. An item costs the images it shows once "
        "(questions on the same images share them): 2 for single, 3 for viescore. The default "
        "fits Qwen3-VL-30B-A3B with 1024x1024 images on an 80 GB GPU.",
    )
    max_wait_s: float = Field(
        default=0.01,
        ge=0,
        le=10,
        description="Longest a question waits for others to share its forward pass.",
    )
    judge_image_pixels: int = Field(
        default=2**21,
        gt=0,
        description="Images are shown to the judge at most this many pixels (scaled down, aspect "
        "kept; 2 MiP, e.g. 1448x1448): the model's cost per image is bounded by this, not by "
        "max_image_pixels. Larger JPEGs are decoded at a reduced scale.",
    )
    queue_capacity: int = Field(
        default=256,
        ge=1,
        description="Items that may wait for the model; beyond it requests get 429.",
    )
    pipeline_depth: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Batches each replica holds: one on the model while its worker prepares the "
        "next (2). The admission queue keeps this many per replica out, and no more; /v1/info "
        "shows the total as batches_out, and the items a client should keep in flight.",
    )
    protocols_dir: Path | None = Field(
        default=None,
        description="Folder of your own judge protocols (*.yaml), offered beside the built-in "
        "viescore and single.",
    )

    # The openai backend: a judge served elsewhere (GPT-4.1, vLLM, SGLang, transformers serve).
    openai_base_url: str | None = Field(
        default=None,
        description="openai backend: the endpoint's base URL, e.g. https://api.openai.com/v1 "
        "or http://vllm:8000/v1.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        description="openai backend: the API key. Never logged, returned or recorded.",
    )
    openai_api_key_file: Path | None = Field(
        default=None,
        description="openai backend: a file holding the API key (a Docker/Kubernetes secret); "
        "wins over REWARD_OPENAI_API_KEY.",
    )
    openai_max_concurrency: int = Field(
        default=8, ge=1, le=256, description="openai backend: requests in flight per replica."
    )
    openai_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="openai backend: one try of one question, end to end (headers and body): a "
        "hard deadline, not a per-read timeout; a try that runs out of it is not retried.",
    )
    openai_max_answer_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="openai backend: the largest answer read from the endpoint; a larger one "
        "fails its question (502) unread.",
    )
    openai_max_retries: int = Field(
        default=4,
        ge=0,
        le=20,
        description="openai backend: retries on 429, 5xx and connection errors (with backoff, "
        "honouring Retry-After); other 4xx are never retried.",
    )

    @model_validator(mode="after")
    def _endpoint_named(self) -> RewardSettings:
        if self.backend != "openai":
            return self
        if not self.openai_base_url:
            raise ValueError("REWARD_BACKEND=openai needs REWARD_OPENAI_BASE_URL")
        refusal = url_refusal(self.openai_base_url)
        if refusal is not None:
            raise ValueError(refusal)
        if "model" not in self.model_fields_set:  # the default (tiny) is no endpoint's model
            raise ValueError(
                "REWARD_BACKEND=openai needs REWARD_MODEL: the name of the model the endpoint "
                "serves (e.g. gpt-4.1)"
            )
        return self

    def resolve_devices(self) -> list[str]:
        """The replicas' devices; by default the first visible GPU (a subprocess asks torch:
        the API process never imports it), else the CPU."""
        if not self.devices and self.backend == "openai":
            return ["cpu"]  # the model runs at the endpoint; the replica only talks HTTP
        return self.devices or super().resolve_devices()[:1]

    def backend_spec(self) -> BackendSpec:
        options = dict(self.backend_options)
        if self.backend == "openai":
            options[OPENAI_OPTION] = self.openai_endpoint()
        return BackendSpec(
            backend=self.backend,
            model=self.model,
            revision=self.revision,
            dtype=self.dtype,
            cache_dir=str(self.cache_dir),
            options=options,
            deterministic=self.deterministic,
        )

    def openai_endpoint(self) -> EndpointConfig:
        if not self.openai_base_url:
            raise ValueError("REWARD_BACKEND=openai needs REWARD_OPENAI_BASE_URL")
        key = self.openai_api_key.get_secret_value() if self.openai_api_key else None
        return EndpointConfig(
            base_url=self.openai_base_url,
            api_key=key,
            api_key_file=self.openai_api_key_file,
            max_concurrency=self.openai_max_concurrency,
            timeout_s=self.openai_timeout_s,
            max_retries=self.openai_max_retries,
            max_answer_bytes=self.openai_max_answer_bytes,
        )
