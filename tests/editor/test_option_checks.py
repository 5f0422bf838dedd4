"""Every configuration error of the diffusers backend is a refusal (final: the worker is given up
at once and the service exits 78, tests/service_kit/test_refused_loads.py), raised before
anything is built or loaded, naming the option; never a TypeError a restart would retry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from editor_service.backends.base import BackendSpec
from editor_service.backends.diffusers_backend import DiffusersEditBackend, pipeline_class_of
from editor_service.backends.factory import make_backend
from editor_service.backends.option_checks import check_options
from editor_service.backends.speed_modes import UnsupportedOption
from editor_service.families.registry import family_of_pipeline
from service_kit.models.refusals import ConfigurationRefused


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lora_scale": "0.8"}, r"lora_scale \(EDITOR_LORA_SCALE\) must be a finite number"),
        ({"step_cache": float("inf")}, "step_cache .* must be a finite number"),
        ({"step_cache_interval": 2.5}, "step_cache_interval .* must be a whole number"),
        ({"step_cache_interval": 1}, "step_cache_interval .* must be at least 2"),
        ({"step_cache_warmup": True}, "step_cache_warmup .* must be a whole number"),
        ({"compile": "false"}, r"compile \(EDITOR_COMPILE\) must be true or false"),
        ({"lora": 7}, "lora .* must be text"),
        ({"lora": "/nonexistent/editbench/lora.safetensors"}, "lora .*: /nonexistent/.* not exist"),
        ({"transformer_fp8": "block"}, "transformer_fp8 .* must be one of row, tensor"),
        ({"attention_backend": "flash-attn"}, "attention_backend .* diffusers' attention back"),
        ({"step_cache": 0.1, "step_cache_interval": 2}, "two step caches"),
    ],
)
def test_an_option_the_backend_cannot_take_is_refused_naming_it(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UnsupportedOption, match=message):
        check_options(options)


def test_the_settings_defaults_and_diffusers_attention_backends_pass() -> None:
    check_options(
        {"compile": None, "lora_scale": 1.0, "step_cache_warmup": 3, "lora": None}
        | {"attention_backend": "_native_cudnn", "transformer_fp8": None, "deterministic": True}
    )


def test_a_bad_option_is_refused_by_the_load_before_anything_is_built(tmp_path: Path) -> None:
    spec = BackendSpec("diffusers", "tiny", None, "auto", str(tmp_path), {"lora_scale": "x"})
    with pytest.raises(UnsupportedOption, match="lora_scale"):
        DiffusersEditBackend(spec).load("cpu")
    assert not list(tmp_path.iterdir())  # nothing built


@pytest.mark.parametrize("index", [None, "{not json", json.dumps({"_diffusers_version": "0.42"})])
def test_a_folder_that_names_no_pipeline_is_refused_naming_the_model_setting(
    tmp_path: Path, index: str | None
) -> None:
    if index is not None:
        (tmp_path / "model_index.json").write_text(index)
    with pytest.raises(UnsupportedOption, match=r"not a diffusers pipeline folder.*EDITOR_MODEL"):
        pipeline_class_of(tmp_path)


def test_a_pipeline_of_no_hosted_family_is_refused_naming_the_model_setting() -> None:
    with pytest.raises(ConfigurationRefused, match=r"not an editing pipeline .* EDITOR_MODEL"):
        family_of_pipeline("StableDiffusionPipeline")


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("difusers", "backend must be 'diffusers' or 'module:Class'"),
        ("no_such_module_here:Editor", "module 'no_such_module_here' cannot be imported"),
        ("tests.support.fake_editors:NoSuchEditor", "has no class 'NoSuchEditor'"),
    ],
)
def test_a_backend_setting_that_names_no_backend_is_refused(backend: str, message: str) -> None:
    with pytest.raises(ConfigurationRefused, match=message):
        make_backend(BackendSpec(backend, "tiny", None, "auto", "/tmp"))


def test_a_model_that_is_no_folder_hub_id_or_builtin_is_refused_when_the_backend_is_built() -> None:
    with pytest.raises(ConfigurationRefused, match="is not a folder, a Hugging Face id"):
        make_backend(BackendSpec("diffusers", "./editors/missing", None, "auto", "/tmp"))


def test_fp8_on_a_cpu_worker_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    """Default devices are resolved at start (no GPU: the CPU): the worker refuses FP8 there
    before building or loading the model, not after its weights have loaded."""
    spec = BackendSpec("diffusers", "tiny", None, "auto", str(tmp_path), {"transformer_fp8": "row"})
    with pytest.raises(UnsupportedOption, match=r"needs a CUDA GPU .* device is cpu"):
        DiffusersEditBackend(spec).load("cpu")
    assert not list(tmp_path.iterdir())  # nothing built
