"""Models every service shares: the wire base, the error envelope, health, readiness, model info."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API_PREFIX = "/v1"

ModelState = Literal["loaded", "loading", "released", "failed"]
"""Where a service's model is: serving (loaded), on its way (loading: starting, restarting or
loading after a release), handed back (released: POST /v1/model/load brings it back), or given
up on (failed: a replica kept failing; see the service log)."""


class WireModel(BaseModel):
    """Base of every response (and every model on the wire): frozen; unknown fields are ignored,
    so a newer service can add a field without breaking an older client."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class RequestModel(WireModel):
    """Base of every request: unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorInfo(WireModel):
    type: str = Field(
        description="Stable machine-readable reason, e.g. invalid_image, queue_full, not_ready."
    )
    message: str = Field(description="What went wrong, for a person.")
    param: str | None = Field(
        default=None, description="The request field at fault, when there is one."
    )
    model_state: ModelState | None = Field(
        default=None,
        description="not_ready answers: where the model is (read this, never the message).",
    )
    retryable: bool | None = Field(
        default=None,
        description="Where the service knows: whether the same request can succeed later.",
    )


class ErrorResponse(WireModel):
    """The body of every non-2xx answer from every service."""

    error: ErrorInfo


class HealthResponse(WireModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(WireModel):
    ready: bool
    detail: str = Field(description="Why the service is or is not ready.")
    workers_ready: int = Field(ge=0)
    workers_total: int = Field(ge=0)
    model_state: ModelState = Field(default="loaded", description="Where the model is.")


class ModelStateResponse(WireModel):
    """POST /v1/model/release and /v1/model/load: hand a GPU between the editor and the judge."""

    action: Literal["release", "load"]
    seconds: float = Field(ge=0, description="How long the hand-over took.")
    loaded: bool = Field(description="Whether the model is on its device(s) now.")
    model_state: ModelState = Field(
        default="loaded", description="Where the model is once this hand-over is done."
    )


ModelSourceKind = Literal["hub", "local", "tiny", "random-full", "endpoint"]


class ModelInfo(WireModel):
    id: str = Field(
        description="Hugging Face id, local folder, the built-in name, or the model name sent to "
        "a remote (OpenAI-compatible) endpoint."
    )
    source: ModelSourceKind
    revision: str | None = Field(
        default=None,
        description="Commit of the hub snapshot, or a content hash of a local/built-in folder.",
    )
    model_class: str = Field(description="Pipeline or model class that was loaded.")
    dtype: str
    meaningful: bool = Field(
        description="False for random-weight models (tiny, random-full): outputs mean nothing."
    )
    options: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict,
        description="How the model was set up beyond its weights (a fused LoRA, a step cache, "
        "compilation, the attention backend): results made otherwise are another configuration.",
    )
    deterministic: bool = Field(
        default=False,
        description="Deterministic mode: an answer is bit-identical whatever else the service "
        "was running (batch, order, partners, replica), on the same GPU model and software.",
    )
