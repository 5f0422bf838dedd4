"""The family seam as data: each family's own parameters, refused on the families without them."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import tomllib
from pathlib import Path

import pytest

import editor_service
from editor_service.backends.base import LoadedModel
from editor_service.families.base import EditorFamily, InvalidParameter
from editor_service.families.options import FAMILY_OPTIONS, option_refusal, unhonoured_options
from editor_service.families.registry import (
    FAMILIES,
    builtin_sources,
    family_of_builtin,
    family_of_model,
    family_of_pipeline,
)
from editor_service.families.wire import (
    input_fidelity_refusal,
    input_limit_message,
    no_inpainting_message,
)


def resolve(family: EditorFamily, **parameters: float) -> dict[str, float]:
    settings = family.resolve(
        num_inference_steps=None,
        negative_prompt=" ",
        parameters=parameters,
        width=None,
        height=None,
    )
    return settings.parameters


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_each_family_fills_its_own_defaults(family: EditorFamily) -> None:
    assert resolve(family) == {p.name: p.default for p in family.parameters}
    assert family.parameters, "a family with no parameters of its own proves nothing here"


def _own(owner: EditorFamily, other: EditorFamily) -> list[str]:
    """The parameters of ``owner`` that ``other`` does not have."""
    return [p.name for p in owner.parameters if other.parameter(p.name) is None]


# Only the pairs where the owner has a parameter the other lacks: a pair sharing every parameter
# (FLUX.1 Kontext and LongCat: guidance_scale) has nothing to refuse, and would pass vacuously.
REFUSING_PAIRS = [(a, b) for a in FAMILIES for b in FAMILIES if a is not b and _own(a, b)]


@pytest.mark.parametrize(("owner", "other"), REFUSING_PAIRS, ids=lambda f: f.name)
def test_a_familys_own_parameters_are_refused_by_the_others(
    owner: EditorFamily, other: EditorFamily
) -> None:
    own = [p for p in owner.parameters if p.name in _own(owner, other)]
    assert own
    for parameter in own:
        with pytest.raises(InvalidParameter) as refused:
            resolve(other, **{parameter.name: parameter.default})
        assert refused.value.param == parameter.name
        assert parameter.name in str(refused.value) and other.title in str(refused.value)
    for parameter in owner.parameters:
        assert resolve(owner, **{parameter.name: parameter.default})[parameter.name] == (
            parameter.default
        )


def test_every_family_has_a_parameter_another_family_refuses() -> None:
    for family in FAMILIES:
        assert any(
            other.parameter(p.name) is None
            for p in family.parameters
            for other in FAMILIES
            if other is not family
        ), family.name


def test_guidance_scale_is_kontexts_and_longcats_not_qwens() -> None:
    kontext, longcat = family_of_pipeline("FluxKontextPipeline"), family_of_builtin("longcat-edit")
    qwen = family_of_pipeline("QwenImageEditPlusPipeline")
    assert resolve(kontext, guidance_scale=3.0)["guidance_scale"] == 3.0
    assert resolve(longcat)["guidance_scale"] == 4.5
    with pytest.raises(InvalidParameter, match="guidance_scale"):
        resolve(qwen, guidance_scale=3.0)
    with pytest.raises(InvalidParameter, match="true_cfg_scale"):
        resolve(longcat, true_cfg_scale=4.0)


def test_out_of_range_values_and_sizes_are_refused_naming_the_field() -> None:
    kontext, longcat = family_of_builtin("kontext"), family_of_builtin("longcat-edit")
    with pytest.raises(InvalidParameter, match=r"guidance_scale: 99.0 is outside ") as refused:
        resolve(kontext, guidance_scale=99.0)
    assert refused.value.param == "guidance_scale"
    with pytest.raises(InvalidParameter, match="it takes no output size") as refused:
        longcat.resolve(
            num_inference_steps=2, negative_prompt=None, parameters={}, width=64, height=64
        )
    assert refused.value.param == "size"


def test_builtin_names_and_pipeline_classes_are_unique_across_families() -> None:
    names = [name for f in FAMILIES for name in f.builtins]
    classes = [c for f in FAMILIES for c in f.pipeline_classes]
    assert len(names) == len(set(names)) and len(classes) == len(set(classes))
    assert {"tiny", "tiny-plus", "tiny-kontext", "tiny-longcat"} <= builtin_sources().keys()
    with pytest.raises(ValueError, match="not an editing pipeline"):
        family_of_pipeline("StableDiffusionPipeline")


def pipeline_arguments(class_name: str) -> set[str]:
    import diffusers

    return set(inspect.signature(getattr(diffusers, class_name).__call__).parameters)


# What the backend adds to a family's own keyword arguments (diffusers_backend.edit).
BACKEND_ARGUMENTS = {"image", "prompt", "generator"}
MASK_ARGUMENTS = {"mask_image", "strength"}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_pipeline_of_a_family_takes_what_the_family_passes_it(family: EditorFamily) -> None:
    """The edit and the inpainting pipeline are called with the family's keyword arguments
    (every parameter set, a negative prompt in use, a size where the family takes one): each
    must be a parameter of that pipeline class in the installed diffusers."""
    strong = {p.name: p.maximum for p in family.parameters}
    side = 64 if family.takes_size else None
    settings = family.resolve(
        num_inference_steps=None,
        negative_prompt="blurry",
        parameters=strong,
        width=side,
        height=side,
    )
    passed = set(family.call(settings)) | BACKEND_ARGUMENTS
    if family.stop_signal == "callback":
        passed.add("callback_on_step_end")
    for pipeline in family.pipeline_classes:
        assert passed <= pipeline_arguments(pipeline), pipeline
    for pipeline, inpainting in family.inpaint_pipelines.items():
        assert pipeline in family.pipeline_classes
        # A masked edit is ~1 MP at the image's aspect (the route refuses a size with a mask).
        unsized = family.call(dataclasses.replace(settings, width=None, height=None))
        masked = set(unsized) | BACKEND_ARGUMENTS | MASK_ARGUMENTS
        assert masked <= pipeline_arguments(inpainting), inpainting


def test_kontext_masks_go_to_its_inpainting_pipeline_and_longcat_has_none() -> None:
    import diffusers

    kontext, longcat = family_of_builtin("kontext"), family_of_builtin("longcat-edit")
    assert kontext.inpaint_pipelines == {"FluxKontextPipeline": "FluxKontextInpaintPipeline"}
    # If diffusers gains a LongCat inpainting pipeline, this says it is time to wire it.
    assert not [name for name in dir(diffusers) if "LongCat" in name and "Inpaint" in name]
    assert not longcat.inpaint_pipelines


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_refusals_that_depend_on_the_model_name_the_loaded_family_only(
    family: EditorFamily,
) -> None:
    model = LoadedModel(
        id="some/model",
        source="local",
        revision=None,
        model_class=next(iter(family.pipeline_classes)),
        dtype="bfloat16",
        meaningful=True,
        family=family.name,
    )
    others = [f.title for f in FAMILIES if f.title != family.title]
    fidelity = input_fidelity_refusal(model)
    assert f"{family.title} always conditions on the whole input image" in fidelity
    assert family.image_conditioning in fidelity
    assert not [title for title in others if title in fidelity]
    more = input_limit_message(model.id, family, 1, 2)
    assert more.startswith(f"2 input images given; some/model takes 1 ({family.title})")
    mask = no_inpainting_message(model.id, family, model.model_class)
    assert f"some/model ({family.title}, {model.model_class})" in mask
    # Before a model has loaded no family is named (none is known).
    unloaded = input_fidelity_refusal(None)
    assert not [f.title for f in FAMILIES if f.title in unloaded]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_familys_pipelines_can_be_stopped_between_steps(family: EditorFamily) -> None:
    """The backend stops a cancelled edit by setting the pipeline's interrupt flag: through
    callback_on_step_end, or for a pipeline without it through a hook on its transformer; the
    pipeline must read the flag (its ``interrupt`` property) either way."""
    import diffusers

    for name in [*family.pipeline_classes, *family.inpaint_pipelines.values()]:
        pipeline = getattr(diffusers, name)
        assert isinstance(inspect.getattr_static(pipeline, "interrupt"), property), name
        takes_callback = "callback_on_step_end" in pipeline_arguments(name)
        assert takes_callback == (family.stop_signal == "callback"), name


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_the_lora_option_is_honoured_by_the_families_whose_pipelines_load_loras(
    family: EditorFamily,
) -> None:
    """``honours`` says what diffusers does: the day LongCat's pipeline gains a LoRA loader,
    this test says the family may honour EDITOR_LORA."""
    import diffusers

    for name in family.pipeline_classes:
        loads_loras = hasattr(getattr(diffusers, name), "load_lora_weights")
        assert loads_loras == ("lora" in family.honours), name


def test_fused_attention_is_honoured_by_qwen_image_edit_only() -> None:
    honour = [f.name for f in FAMILIES if "fused_attention" in f.honours]
    assert honour == ["qwen-image-edit"]
    assert set(FAMILY_OPTIONS) >= {o for f in FAMILIES for o in f.honours}


def test_an_option_the_family_cannot_honour_is_named_with_the_family_and_who_does() -> None:
    kontext = family_of_builtin("kontext")
    options = {"fused_attention": True, "lora": None, "compile": True}
    assert unhonoured_options(kontext, options) == ["fused_attention"]
    message = option_refusal("fused_attention", kontext, "tiny-kontext")
    assert "EDITOR_FUSED_ATTENTION" in message and "--fused-attention" in message
    assert "tiny-kontext is FLUX.1 Kontext" in message
    assert "Families that do: Qwen-Image-Edit." in message
    longcat = family_of_builtin("longcat-edit")
    assert unhonoured_options(longcat, {"lora": "some/lora", "fused_attention": False}) == ["lora"]
    assert "Families that do: Qwen-Image-Edit, FLUX.1 Kontext." in option_refusal(
        "lora", longcat, "tiny-longcat"
    )


def test_a_model_setting_names_its_family_by_builtin_name_or_hub_id() -> None:
    assert family_of_model("tiny-kontext") == family_of_builtin("kontext")
    longcat = family_of_builtin("longcat-edit")
    assert family_of_model(" meituan-longcat/LongCat-Image-Edit") == longcat
    assert family_of_model("qwen/qwen-image-edit-2509") == family_of_builtin("edit-plus")
    assert family_of_model("/models/my-kontext") is None  # its model_index.json says, at load
    assert family_of_model("someone/another-model") is None


def test_the_services_own_descriptions_name_every_hosted_family() -> None:
    """The package, its backend and its distribution describe the service as what the registry
    hosts, not as one family's (read as text: the backend module imports torch)."""
    src = Path(editor_service.__file__).parent
    backend = ast.parse((src / "backends" / "diffusers_backend.py").read_text())
    project = tomllib.loads((src.parents[1] / "pyproject.toml").read_text())["project"]
    described = {
        "editor_service": editor_service.__doc__ or "",
        "diffusers_backend": ast.get_docstring(backend) or "",
        "pyproject.toml": project["description"],
    }
    for where, text in described.items():
        missing = [f.title for f in FAMILIES if f.title not in text]
        assert not missing, f"{where} does not name {missing}"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_family_parks_every_text_encoder_its_pipelines_have(family: EditorFamily) -> None:
    """EDITOR_PARK_TEXT_ENCODER parks ``text_encoders``: on FLUX.1 Kontext that must include
    T5 (text_encoder_2), the large one, not CLIP alone."""
    import diffusers

    for name in [*family.pipeline_classes, *family.inpaint_pipelines.values()]:
        init = inspect.signature(getattr(diffusers, name).__init__).parameters
        encoders = tuple(p for p in init if p.startswith("text_encoder"))
        assert encoders == family.text_encoders, name
