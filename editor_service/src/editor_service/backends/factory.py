"""The backend a spec names: the built-in diffusers backend, or any ``module:Class``."""

from __future__ import annotations

from editor_service.backends.base import BackendSpec, EditBackend
from service_kit.models.backend_spec import custom_backend_class


def make_backend(spec: BackendSpec) -> EditBackend:
    """Build the backend named by the spec; heavy modules are imported only here."""
    if spec.backend == "diffusers":
        from editor_service.backends.diffusers_backend import DiffusersEditBackend

        return DiffusersEditBackend(spec)
    backend: EditBackend = custom_backend_class(spec, "'diffusers'")(spec)
    return backend
