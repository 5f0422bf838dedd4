"""The seam between the worker process and a model: plain dataclasses and a small Protocol.

Nothing here imports torch, FastAPI or the wire schemas; backends receive service-internal
dataclasses and raise plain exceptions (or the typed ones below), which the worker turns into
messages for the API process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import service_kit.models.loaded_model
from service_kit.images.decoding import RGBImage
from service_kit.models.backend_spec import BackendSpec

__all__ = [
    "BackendSpec",
    "DeviceOutOfMemory",
    "EditBackend",
    "EditJob",
    "EditOutput",
    "InvalidJob",
    "JobCancelled",
    "LoadedModel",
    "RGBImage",
]


@dataclass(frozen=True, slots=True)
class EditJob:
    job_id: str
    image: RGBImage
    instruction: str
    negative_prompt: str
    num_inference_steps: int | None  # None: the family's default
    true_cfg_scale: float | None  # a family parameter (Qwen, Kontext) by its historic name
    seed: int
    width: int | None  # output size; None: the model's default for the source
    height: int | None
    # More images for a multi-image (Edit Plus) model, after ``image``; see LoadedModel.max_images.
    more_images: tuple[RGBImage, ...] = ()
    # Where to edit (white) and what to keep (black), the size of ``image``: an inpainting edit,
    # where the model has one (LoadedModel.inpainting); the output is then ~1 MP.
    mask: RGBImage | None = None
    # The family's own parameters by name (guidance_scale...), checked against the loaded family.
    parameters: Mapping[str, float] = field(default_factory=dict)
    # The request field the instruction came in (the form calls it prompt): refusals name it.
    instruction_param: str = "instruction"

    def family_parameters(self) -> dict[str, float]:
        """``parameters`` with ``true_cfg_scale`` when it was given by its own field."""
        given = dict(self.parameters)
        if self.true_cfg_scale is not None:
            given["true_cfg_scale"] = self.true_cfg_scale
        return given


@dataclass(frozen=True, slots=True)
class EditOutput:
    image: RGBImage
    pipeline_s: float  # the pipeline call alone, for overhead accounting
    device_memory_peak_bytes: int | None = None  # since the model loaded, if the device tells
    # What the edit ran with, the family's defaults filled in (None/empty: as the job said).
    num_inference_steps: int | None = None
    parameters: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadedModel(service_kit.models.loaded_model.LoadedModel):
    """What a backend reports once loaded (service_kit.models.loaded_model), and what an edit may
    take."""

    max_images: int = 1  # images one edit may take (Edit Plus: several)
    inpainting: bool = False  # whether a job may carry a mask
    family: str | None = None  # editor_service.families: what the pipeline takes


class InvalidJob(Exception):
    """The job's input cannot be edited (for example an unreadable image): a 4xx, not a 5xx.

    ``param`` names the request field at fault.
    """

    def __init__(self, message: str, param: str = "image") -> None:
        super().__init__(message)
        self.param = param


class JobCancelled(Exception):
    """The job was stopped at a step boundary because its client went away."""


class DeviceOutOfMemory(Exception):
    """The device ran out of memory for this job; the backend has freed what it could."""


class EditBackend(Protocol):
    def load(self, device: str) -> LoadedModel:
        """Load weights onto ``device``; runs once, inside the worker process."""
        ...

    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        """Run one edit. Poll ``should_stop`` between steps; raise JobCancelled if it is true."""
        ...

    def release(self) -> None:
        """Free the device memory the model holds; ``load`` may be called again later."""
        ...
