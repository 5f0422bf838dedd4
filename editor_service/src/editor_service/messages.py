"""Messages between the API process and its worker processes: plain frozen dataclasses.

API -> worker (on the worker's own job queue): EditJob, ReleaseModel, LoadModel, or None (stop).
Worker -> API (on the shared event queue): the events below. Errors travel as a type and a
message, never as exception objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from editor_service.backends.base import EditOutput, LoadedModel

FailureKind = Literal["invalid_input", "out_of_memory", "cancelled", "backend_error"]


@dataclass(frozen=True, slots=True)
class ReleaseModel:
    """Free the model's device memory (hand the GPU to another service)."""


@dataclass(frozen=True, slots=True)
class LoadModel:
    """Load the model again after a ReleaseModel."""


@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker: int
    pid: int
    model: LoadedModel
    load_s: float


@dataclass(frozen=True, slots=True)
class WorkerLoadFailed:
    worker: int
    pid: int
    message: str


@dataclass(frozen=True, slots=True)
class WorkerReleased:
    worker: int
    release_s: float


@dataclass(frozen=True, slots=True)
class JobDone:
    worker: int
    job_id: str
    output: EditOutput
    edit_s: float


@dataclass(frozen=True, slots=True)
class JobFailed:
    worker: int
    job_id: str
    kind: FailureKind
    message: str
    param: str | None = None  # invalid_input: the request field at fault


WorkerEvent = WorkerReady | WorkerLoadFailed | WorkerReleased | JobDone | JobFailed
