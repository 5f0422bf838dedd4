"""The editor's OpenAI images-edit form (POST /v1/images/edits), as the official SDK sends it.

Every text field the SDK can send is here, honoured, or refused by the values it allows; the
files (``image`` / ``image[]``, ``mask``) travel beside it. editbench's own edit parameters
(steps, CFG, seed...) may be added as form fields too, and so may the loaded family's own
parameters by name (``guidance_scale=2.5``, as SGLang's and vLLM-Omni's forms take them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared_schemas.common import RequestModel, WireModel
from shared_schemas.edits import MAX_SEED

MAX_IMAGES_PER_EDIT_REQUEST = 4  # n


class OpenAIImageEditForm(RequestModel):
    """The text fields of the form. Values this service cannot honour are refused (400 naming
    the field), never ignored."""

    prompt: str = Field(min_length=1, max_length=4000, description="The edit instruction.")
    n: int = Field(
        default=1,
        ge=1,
        le=MAX_IMAGES_PER_EDIT_REQUEST,
        description="Images to make, from n seeds (seed, seed+1, ... when seed is given).",
    )
    size: str = Field(
        default="auto",
        description="WIDTHxHEIGHT, multiples of 16 from 16 to 4096; auto: ~1 MP at the "
        "source's aspect.",
    )
    response_format: Literal["b64_json"] = Field(
        default="b64_json", description="Only b64_json: this service keeps no image URLs."
    )
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="jpeg/webp only: the encoder's quality, 0-100 (100: least compressed).",
    )
    background: Literal["auto", "opaque"] = Field(
        default="auto", description="The model makes opaque images; transparent is refused."
    )
    quality: Literal["auto"] = Field(
        default="auto",
        description="Only auto: there are no quality tiers here; num_inference_steps trades "
        "time for quality.",
    )
    input_fidelity: Literal["high"] = Field(
        default="high",
        description="Only high: every hosted family conditions on the whole input image "
        "(a 400 for low names the loaded one).",
    )
    stream: bool = Field(
        default=False,
        description="Answer as server-sent events: one image_edit.completed event per image.",
    )
    partial_images: int = Field(
        default=0, ge=0, le=0, description="Only 0: partial images are not streamed."
    )
    model: str | None = Field(
        default=None, max_length=500, description="If given, the served model's id."
    )
    user: str | None = Field(default=None, max_length=500, description="Logged, not used.")
    safety_identifier: str | None = Field(default=None, max_length=500)
    # editbench's own parameters (see EditParameters)
    negative_prompt: str = Field(default=" ", max_length=4000)
    num_inference_steps: int | None = Field(default=None, ge=2, le=200)
    true_cfg_scale: float | None = Field(default=None, ge=1.0, le=20.0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    compress_level: int = Field(default=1, ge=0, le=9, description="png only: zlib level.")


class OpenAIImageEditCompleted(WireModel):
    """One server-sent event of a streamed edit (``stream=true``), in OpenAI's shape."""

    type: Literal["image_edit.completed"] = "image_edit.completed"
    b64_json: str
    background: Literal["opaque"] = "opaque"
    created_at: int
    output_format: Literal["png", "jpeg", "webp"]
    quality: Literal["auto"] = "auto"
    size: str
    seed: int | None = Field(default=None, description="editbench: the seed of this image.")
