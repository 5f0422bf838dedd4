"""Messages between the API process and its worker processes: plain frozen dataclasses.

API -> worker (on the worker's own pipe): RunJob, service_kit.replicas.replica_set's ReleaseModel
and LoadModel, or None (stop). Worker -> API: the replica lifecycle events
(service_kit.replicas.replica_set) and the job events below. Errors travel as a type and a message,
never as exception objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from editor_service.backends.base import EditJob, EditOutput

FailureKind = Literal["invalid_input", "out_of_memory", "cancelled", "backend_error"]


@dataclass(frozen=True, slots=True)
class RunJob:
    """One edit. ``ticket`` names it to the worker's cancel flag: a field, never parsed."""

    job: EditJob
    ticket: int


@dataclass(frozen=True, slots=True)
class JobDone:
    job_id: str
    output: EditOutput
    edit_s: float


@dataclass(frozen=True, slots=True)
class JobFailed:
    job_id: str
    kind: FailureKind
    message: str
    param: str | None = None  # invalid_input: the request field at fault


JobEvent = JobDone | JobFailed
