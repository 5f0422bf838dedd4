"""What a backend reports once its model is loaded, and its wire form (ModelInfo).

A plain dataclass (it crosses process boundaries); nothing here imports torch or FastAPI. Each
service's ``backends.base`` adds its own fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from service_kit.models.sources import ModelSource
from service_kit.text_safety import reserved_strings
from shared_schemas import ModelInfo


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


def model_info(model: LoadedModel) -> ModelInfo:
    """The wire form; ``deterministic`` from the model's own field where it has one (the judge),
    else from its details (the editor's option)."""
    deterministic = getattr(model, "deterministic", None)
    if deterministic is None:
        deterministic = model.details.get("deterministic") is True
    return ModelInfo(
        id=model.id,
        source=model.source,
        revision=model.revision,
        model_class=model.model_class,
        dtype=model.dtype,
        meaningful=model.meaningful,
        options=dict(model.details),
        deterministic=bool(deterministic),
    )
