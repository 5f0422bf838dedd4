"""The backend seam both services share: what a worker needs to build its backend, what a
backend reports once its model is loaded, and a backend named as ``module:Class``.

Plain dataclasses (they cross process boundaries); nothing here imports torch or FastAPI. Each
service's ``backends.base`` adds its own job types, its own LoadedModel fields and its Protocol.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Self

from service_kit.model_source import ModelSource
from service_kit.text_safety import reserved_strings


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


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What a backend reports once loaded; becomes the wire ModelInfo in the API process."""

    id: str
    source: str  # hub | local | tiny | random-full | endpoint
    revision: str | None
    model_class: str
    dtype: str
    meaningful: bool
    # How the model was set up beyond its weights (attention backend, compile...): the wire's
    # options.
    details: dict[str, Any] = field(default_factory=dict)
    # Strings the model's tokenizer reads as control tokens: user text holding one is refused
    # before it is queued (service_kit.text_safety).
    reserved_text: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        source: ModelSource,
        revision: str | None,
        model: object,
        dtype: object,
        tokenizer: Any,
        **more: Any,
    ) -> Self:
        """The report of ``model`` (its class names it) loaded from ``source`` as ``dtype`` (a
        torch dtype, named without its module), whose ``tokenizer`` says which strings are
        control tokens; ``more``: the service's own fields."""
        return cls(
            id=source.name,
            source=source.kind,
            revision=revision,
            model_class=type(model).__name__,
            dtype=str(dtype).removeprefix("torch."),
            meaningful=source.meaningful,
            reserved_text=reserved_strings(tokenizer),
            **more,
        )


def custom_backend_class(spec: BackendSpec, builtins: str) -> Any:
    """The class ``module:Class`` in ``spec.backend`` names (imported now); ``builtins`` says
    what else the setting may be, for the error."""
    module_name, sep, class_name = spec.backend.partition(":")
    if not sep:
        raise ValueError(f"backend must be {builtins} or 'module:Class', not {spec.backend!r}")
    return getattr(importlib.import_module(module_name), class_name)
