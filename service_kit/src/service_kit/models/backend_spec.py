"""What a worker needs to build its backend (the spec), and a backend named as ``module:Class``.

A plain dataclass (it crosses process boundaries); nothing here imports torch or FastAPI. Each
service's ``backends.base`` adds its own options and its Protocol.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from service_kit.models.refusals import ConfigurationRefused


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Everything a worker needs to build its backend; picklable, cheap, no weights.

    ``backend`` is a built-in backend's name or ``module:Class`` naming any class that implements
    the service's backend Protocol and takes the spec as its only argument.
    """

    backend: str
    model: str
    revision: str | None
    dtype: str
    cache_dir: str
    options: dict[str, Any] = field(default_factory=dict)


def custom_backend_class(spec: BackendSpec, builtins: str) -> Any:
    """The class ``module:Class`` in ``spec.backend`` names (imported now); ``builtins`` says
    what else the setting may be, for the error. A setting that names no importable class is
    refused (ConfigurationRefused): no restart imports it."""
    module_name, sep, class_name = spec.backend.partition(":")
    if not sep:
        raise ConfigurationRefused(
            f"backend must be {builtins} or 'module:Class', not {spec.backend!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationRefused(
            f"backend {spec.backend!r}: module {module_name!r} cannot be imported ({exc})"
        ) from None
    found = getattr(module, class_name, None)
    if not isinstance(found, type):
        raise ConfigurationRefused(
            f"backend {spec.backend!r}: {module_name} has no class {class_name!r}"
        )
    return found
