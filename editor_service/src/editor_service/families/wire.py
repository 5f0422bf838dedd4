"""The loaded family on the wire: /v1/info's description and the API process's early check."""

from __future__ import annotations

from collections.abc import Mapping

from editor_service.backends.base import LoadedModel
from editor_service.families.base import EditorFamily, InvalidParameter
from editor_service.families.registry import FAMILIES, family_named
from service_kit.errors import InvalidInput
from shared_schemas import EditorFamilyInfo, FamilyParameterInfo


def loaded_family(model: LoadedModel | None) -> EditorFamily | None:
    if model is None or model.family is None:
        return None
    return family_named(model.family)


def inpainting_families() -> str:
    """The hosted families that take a mask, and their inpainting pipelines (for messages)."""
    return ", ".join(
        f"{f.title} ({', '.join(sorted(set(f.inpaint_pipelines.values())))})"
        for f in FAMILIES
        if f.inpaint_pipelines
    )


def multi_image_pipelines() -> str:
    """The hosted pipelines that take several input images, and how many (for messages)."""
    return ", ".join(
        f"{f.title}'s {name} (up to {takes})"
        for f in FAMILIES
        for name, takes in f.pipeline_classes.items()
        if takes > 1
    )


def input_limit_message(
    model_name: str, family: EditorFamily | None, takes: int, given: int
) -> str:
    """Why an edit with ``given`` input images is refused by a model that takes ``takes``."""
    limit = "takes 1" if takes == 1 else f"takes at most {takes}"
    named = f" ({family.title})" if family is not None else ""
    message = f"{given} input images given; {model_name} {limit}{named}"
    if takes == 1:
        message += f"; several need a multi-image pipeline: {multi_image_pipelines()}"
    return message


def input_fidelity_refusal(model: LoadedModel | None) -> str:
    """OpenAI's input_fidelity=low, refused in the words of the loaded family."""
    family = loaded_family(model)
    if family is None:
        return (
            "only high: the editor's models always condition on the whole input image "
            "(low is not supported)"
        )
    return (
        f"only high: {family.title} always conditions on the whole input image "
        f"({family.image_conditioning}); low is not supported"
    )


def no_inpainting_message(model_name: str, family: EditorFamily | None, pipeline: str) -> str:
    """Why a mask is refused by a model without an inpainting pipeline."""
    what = pipeline if family is None else f"{family.title}, {pipeline}"
    return (
        f"mask: {model_name} ({what}) has no inpainting pipeline; masks work with "
        f"{inpainting_families()}"
    )


def family_info(model: LoadedModel | None) -> EditorFamilyInfo | None:
    family = loaded_family(model)
    if family is None or model is None:
        return None
    return EditorFamilyInfo(
        name=family.name,
        title=family.title,
        parameters=[
            FamilyParameterInfo(
                name=p.name,
                default=p.default,
                minimum=p.minimum,
                maximum=p.maximum,
                description=p.description,
            )
            for p in family.parameters
        ],
        default_steps=family.default_steps,
        min_steps=family.min_steps,
        takes_size=family.takes_size,
        takes_negative_prompt=family.takes_negative_prompt,
        prompt_token_limit=family.prompt_token_limit,
        max_images=model.max_images,
        inpainting=model.inpainting,
    )


def check_input_count(model: LoadedModel | None, given: int, *, param: str) -> None:
    """Refuse (400 naming ``param`` and the limit) more input images than the loaded model's
    family takes, before anything is queued or decoded. Before a model has loaded, the worker's
    backend makes the same check."""
    if model is not None and given > model.max_images:
        raise InvalidInput(
            input_limit_message(model.id, loaded_family(model), model.max_images, given),
            param=param,
        )


def check_parameters(
    model: LoadedModel | None,
    *,
    num_inference_steps: int | None,
    parameters: Mapping[str, float],
    width: int | None,
    height: int | None,
) -> None:
    """Refuse (400 naming it) what the loaded family does not take, before anything is queued.
    Before a model has loaded, the worker's backend makes the same check."""
    family = loaded_family(model)
    if family is None:
        if model is not None:  # a custom backend that names no family takes none of theirs
            for name in parameters:
                if name != "true_cfg_scale":  # the historic field every backend receives
                    raise InvalidInput(
                        f"{name}: not a parameter of {model.id} (its backend names no family)",
                        param=name,
                    )
        return
    try:
        family.resolve(
            num_inference_steps=num_inference_steps,
            negative_prompt=None,
            parameters=parameters,
            width=width,
            height=height,
        )
    except InvalidParameter as exc:
        raise InvalidInput(str(exc), param=exc.param) from None
