"""Requests and responses of the editor service (any hosted family of editing models).

Family-neutral: the common fields (steps, seed, size, negative prompt) plus the loaded family's
own parameters by name (``parameters``), which the service checks against the family that is
loaded (GET /v1/info lists them with their defaults). ``true_cfg_scale`` keeps its own field
(Qwen-Image-Edit's and Kontext's parameter, by the name it always had)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, FiniteFloat, StringConstraints, model_validator

from shared_schemas.common import ModelInfo, ModelState, RequestModel, WireModel
from shared_schemas.images import ImageData, ImageFormat

MAX_SEED = 2**63 - 1
# Output sides must be multiples of 16 (VAE factor 8 x patch 2) for Qwen-Image.
SIZE_MULTIPLE = 16
MAX_SIDE = 4096
# Input images one edit request may carry at most (the first included); the loaded family takes
# fewer (GET /v1/info: family.max_images), and more than it takes is a 400 naming its limit.
MAX_EDIT_INPUTS = 6


# A family parameter's value: a finite number (guidance scales and the like), by a name of at
# most 64 characters (the form route's bound too). NaN and infinities are no values: JSON's
# NaN/Infinity literals would otherwise pass, and NaN passes every range check.
MAX_PARAMETER_NAME = 64
FamilyParameters = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=MAX_PARAMETER_NAME)], FiniteFloat
]


class EditParameters(RequestModel):
    """How to edit. Omitted values are the loaded family's published defaults (Qwen-Image-Edit:
    50 steps, true CFG 4; FLUX.1 Kontext: 28 steps, guidance 2.5)."""

    negative_prompt: str = Field(
        default=" ",
        max_length=4000,
        description="Used only with true CFG (true_cfg_scale > 1).",
    )
    num_inference_steps: int | None = Field(
        default=None,
        ge=2,
        le=200,
        description="Omitted: the family's default. At least 2: with Qwen-Image's scheduler "
        "(shift_terminal) one step divides by zero and the output is NaN.",
    )
    true_cfg_scale: float | None = Field(
        default=None,
        ge=1.0,
        le=20.0,
        description="True classifier-free guidance, for families that take it (Qwen-Image-Edit, "
        "Kontext); 1 turns it off. Omitted: the family's default.",
    )
    parameters: FamilyParameters = Field(
        default_factory=dict,
        max_length=16,
        description="The loaded family's own parameters by name (e.g. guidance_scale), as "
        "GET /v1/info lists them; one the family does not take is a 400 naming it.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Same inputs and seed give the same image on the same device. "
        "Omitted: the service picks one and returns it.",
    )
    width: int | None = Field(
        default=None,
        ge=SIZE_MULTIPLE,
        le=MAX_SIDE,
        multiple_of=SIZE_MULTIPLE,
        description="Output width. Omitted (with height): ~1 megapixel at the source's aspect.",
    )
    height: int | None = Field(
        default=None, ge=SIZE_MULTIPLE, le=MAX_SIDE, multiple_of=SIZE_MULTIPLE
    )
    output_format: ImageFormat = "png"
    compress_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description="PNG only: zlib level of the answer. 0 stores the pixels uncompressed "
        "(fastest to produce, ~3 MB per megapixel); higher is smaller and slower. Lossless always.",
    )

    @model_validator(mode="after")
    def _size_given_together(self) -> Self:
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height must be given together")
        return self


class EditRequest(EditParameters):
    """POST /v1/edits."""

    image: ImageData
    images: list[ImageData] = Field(
        default_factory=list,
        max_length=MAX_EDIT_INPUTS - 1,
        description="Further input images after ``image``, in order, for a family that takes "
        "several (Qwen-Image-Edit-2509/2511: family.max_images in GET /v1/info); each is "
        "checked and decoded as ``image`` is. More than the family takes is a 400 naming its "
        "limit.",
    )
    instruction: str = Field(min_length=1, max_length=4000, description="The edit to make.")

    @property
    def input_images(self) -> list[bytes]:
        """Every input image, the first included, in order."""
        return [self.image, *self.images]


class EditTimings(WireModel):
    queue_wait_s: float = Field(ge=0, description="From acceptance to a worker picking it up.")
    edit_s: float = Field(ge=0, description="Inside the worker: decode, pipeline, encode.")
    pipeline_s: float = Field(ge=0, description="The model alone (the diffusers pipeline call).")
    total_s: float = Field(
        ge=0, description="From acceptance (after decoding) to the worker's result."
    )


class EditResponse(WireModel):
    image: ImageData
    output_format: ImageFormat
    width: int
    height: int
    seed: int
    num_inference_steps: int
    true_cfg_scale: float | None = Field(
        default=None, description="As run, for families that take it."
    )
    negative_prompt: str
    family: str | None = Field(default=None, description="The family of the model that edited.")
    parameters: FamilyParameters = Field(
        default_factory=dict, description="The family's own parameters as run, defaults filled."
    )
    worker: int = Field(description="Index of the worker process that ran the edit.")
    device: str
    model: ModelInfo
    timings: EditTimings


WorkerState = Literal["starting", "ready", "busy", "failed", "restarting", "stopped", "released"]


class WorkerInfo(WireModel):
    index: int
    device: str
    state: WorkerState
    pid: int | None
    jobs_done: int = Field(ge=0)
    restarts: int = Field(ge=0)


class FamilyParameterInfo(WireModel):
    name: str
    default: float
    minimum: float
    maximum: float
    description: str


class EditorFamilyInfo(WireModel):
    """The loaded model's family: what an edit request may carry for it."""

    name: str = Field(description="e.g. qwen-image-edit, flux-kontext, longcat-image-edit.")
    title: str
    parameters: list[FamilyParameterInfo] = Field(
        description="The family's own parameters (the request's ``parameters`` map; "
        "true_cfg_scale also by its own field)."
    )
    default_steps: int
    min_steps: int
    takes_size: bool = Field(description="Whether an output size (width/height, size) applies.")
    takes_negative_prompt: bool
    prompt_token_limit: int
    max_images: int = Field(description="Images one edit may take.")
    inpainting: bool = Field(description="Whether an edit may carry a mask.")


class EditorInfo(WireModel):
    """GET /v1/info on the editor."""

    service: Literal["editor"] = "editor"
    version: str
    model: ModelInfo | None = Field(description="None until the first worker has loaded.")
    family: EditorFamilyInfo | None = Field(
        default=None, description="The loaded model's family; None until it has loaded."
    )
    devices: list[str]
    workers: list[WorkerInfo]
    queue_capacity: int = Field(description="Jobs that may wait beyond those running.")
    queue_depth: int
    max_in_flight: int = Field(
        description="Requests a client may keep outstanding without being refused: "
        "one running per worker plus the queue."
    )
    model_state: ModelState = Field(default="loaded", description="Where the model is.")
    client_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Requests one client should keep in flight to keep every serving worker "
        "busy without being refused (the service's admission queue decides it; a client "
        "sharing the service with others may be held to a smaller share: 429 with "
        "Retry-After). None from services older than this field.",
    )


class OpenAIImage(WireModel):
    b64_json: str
    revised_prompt: str | None = None
    # editbench's own (the official SDK keeps unknown fields: ``image.seed``, ``image.timings``).
    seed: int | None = Field(
        default=None,
        description="editbench: the seed that made this image; send it as seed with n=1 to make "
        "the same image again.",
    )
    timings: EditTimings | None = Field(default=None, description="editbench: this image's times.")


class OpenAIImagesResponse(WireModel):
    """The answer of POST /v1/images/edits, in OpenAI's images API shape, plus editbench's
    ``model`` and each image's ``seed`` and ``timings`` (fields the official SDK keeps)."""

    created: int
    data: list[OpenAIImage]
    model: ModelInfo | None = Field(default=None, description="editbench: the model that edited.")
    background: Literal["opaque"] | None = None
    output_format: ImageFormat | None = None
    quality: Literal["auto"] | None = None
    size: str | None = Field(default=None, description="WIDTHxHEIGHT of the images made.")


class OpenAIModel(WireModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "editbench"


class OpenAIModelList(WireModel):
    """GET /v1/models on the editor: the served model, in OpenAI's list shape (what clients of
    /v1/images/edits read to name the model)."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]
