"""The family seam: what one family of editing pipelines needs, as data and one function.

A family is chosen by the loaded pipeline's class. It says what its pipeline takes (its own
parameters, their defaults and ranges; whether an output size or a negative prompt applies), how
long a prompt it reads, which inpainting pipeline shares its components, which transformer
layers FP8 may quantize, which family-dependent options it honours, and which module of
tiny_models builds its random-weight models. The wire stays family-neutral: common fields plus
the family's own parameters by name, validated here against the loaded family. Nothing here
imports torch or diffusers (the API process uses it to validate requests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# Images one edit may take unless a pipeline class says otherwise.
ONE_IMAGE = 1


class InvalidParameter(ValueError):
    """A request parameter the loaded family does not take, or a value out of its range."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Parameter:
    """One of a family's own pipeline parameters (a number)."""

    name: str
    default: float
    minimum: float
    maximum: float
    description: str


@dataclass(frozen=True, slots=True)
class EditSettings:
    """What one edit runs with, every default filled in from the family."""

    num_inference_steps: int
    negative_prompt: str | None  # None: the family takes none, or guidance does not use it
    parameters: dict[str, float]
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True)
class PipelineCall:
    """The pipeline's own keyword arguments for one edit (images, generator and callbacks are
    added by the backend)."""

    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EditorFamily:
    name: str
    title: str
    # Pipeline class name -> images one edit may take (several: a multi-image edit).
    pipeline_classes: Mapping[str, int]
    parameters: tuple[Parameter, ...]
    default_steps: int
    min_steps: int
    takes_size: bool
    takes_negative_prompt: bool
    # The tokenizer (pipeline attribute) whose length limit is the prompt limit, and the limit.
    prompt_tokenizer: str
    prompt_token_limit: int
    # Turns resolved settings into the pipeline's keyword arguments.
    call: Callable[[EditSettings], dict[str, Any]]
    # The module of tiny_models that builds this family (``build_pipeline``,
    # ``ensure_tiny_folder``) and the built-in sources it serves: name -> (kind, variant).
    builder: str
    builtins: Mapping[str, tuple[str, str]]
    # How the pipeline sees the input image, for refusals that depend on it (OpenAI's
    # input_fidelity): "conditions on the whole input image: <this>".
    image_conditioning: str
    # Pipeline class name -> the inpainting pipeline class built from the same components.
    inpaint_pipelines: Mapping[str, str] = field(default_factory=dict)
    # Regular expression (fullmatch) over the transformer's module names that FP8 quantizes.
    fp8_layers: str = ""
    hub_ids: tuple[str, ...] = ()
    # The family-dependent editor options (families.options.FAMILY_OPTIONS) this family
    # honours; one set for a family that cannot is refused at start.
    honours: frozenset[str] = frozenset()
    # The pipeline's text encoders (component names): EDITOR_PARK_TEXT_ENCODER parks each.
    text_encoders: tuple[str, ...] = ("text_encoder",)
    # How a cancelled job (its client went away, its deadline passed) is stopped between
    # denoising steps; either way the backend sets the pipeline's interrupt flag and the pipeline
    # skips the steps left. "callback": the pipeline calls callback_on_step_end after each step.
    # "transformer_hook": the pipeline checks its ``interrupt`` property every step but takes no
    # callback (diffusers 0.42.1's LongCatImageEditPipeline), so a forward hook on its
    # transformer asks after each model call.
    stop_signal: Literal["callback", "transformer_hook"] = "callback"

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def resolve(
        self,
        *,
        num_inference_steps: int | None,
        negative_prompt: str | None,
        parameters: Mapping[str, float],
        width: int | None,
        height: int | None,
    ) -> EditSettings:
        """The settings of one edit, or InvalidParameter naming the field at fault."""
        values: dict[str, float] = {}
        for name, value in parameters.items():
            spec = self.parameter(name)
            if spec is None:
                takes = ", ".join(p.name for p in self.parameters) or "none"
                raise InvalidParameter(
                    f"{name}: not a parameter of {self.title} (the loaded model's family "
                    f"{self.name!r}); its own parameters: {takes}",
                    param=name,
                )
            if not spec.minimum <= value <= spec.maximum:
                raise InvalidParameter(
                    f"{name}: {value} is outside {spec.minimum}..{spec.maximum} for {self.title}",
                    param=name,
                )
            values[name] = float(value)
        for spec in self.parameters:
            values.setdefault(spec.name, spec.default)
        if width is not None and not self.takes_size:
            raise InvalidParameter(
                f"size: {self.title} makes ~1 MP at the source's aspect; it takes no output "
                "size (leave width/height or size out)",
                param="size",
            )
        steps = self.default_steps if num_inference_steps is None else num_inference_steps
        if steps < self.min_steps:
            raise InvalidParameter(
                f"num_inference_steps: {self.title} needs at least {self.min_steps}",
                param="num_inference_steps",
            )
        return EditSettings(
            num_inference_steps=steps,
            negative_prompt=negative_prompt if self.takes_negative_prompt else None,
            parameters=values,
            width=width,
            height=height,
        )
