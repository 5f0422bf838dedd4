"""Settings as users give them: EDITOR_* variables, overridden by flags."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from editor_service.config import EditorSettings
from editor_service.families.registry import FAMILIES, builtin_sources
from service_kit.models.refusals import EXIT_CONFIG_REFUSED
from tests.support.servers import offline_env

READ = (
    "import sys, json; from editor_service.config import EditorSettings; "
    "from service_kit.settings import load_settings; "
    "s = load_settings(EditorSettings, 'python -m editor_service', sys.argv[1:]); "
    "print(s.model_dump_json())"
)


def settings_from(env: dict[str, str], *flags: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READ, *flags],
        env=offline_env(**env),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_environment_variables_configure_the_editor() -> None:
    settings = settings_from(
        {
            "EDITOR_MODEL": "Qwen/Qwen-Image-Edit",
            "EDITOR_DEVICES": "cuda:0, cuda:1",
            "EDITOR_COMPILE": "true",
            "EDITOR_QUEUE_CAPACITY": "4",
            "EDITOR_API_KEYS": "k1,k2",
        }
    )
    assert settings["model"] == "Qwen/Qwen-Image-Edit"
    assert settings["devices"] == ["cuda:0", "cuda:1"]
    assert settings["compile"] is True and settings["queue_capacity"] == 4
    assert len(settings["api_keys"]) == 2
    assert "k1" not in json.dumps(settings) and "k2" not in json.dumps(settings)  # not echoed


def test_flags_override_environment_variables() -> None:
    settings = settings_from(
        {"EDITOR_MODEL": "tiny", "EDITOR_PORT": "9000"},
        "--model",
        "tiny-plus",
        "--devices",
        "cpu,cpu",
        "--port",
        "8123",
        "--step-cache",
        "0.08",
    )
    assert settings["model"] == "tiny-plus"
    assert settings["devices"] == ["cpu", "cpu"]
    assert settings["port"] == 8123 and settings["step_cache"] == 0.08


def test_defaults_listen_on_localhost_8001_with_the_tiny_model() -> None:
    settings = settings_from({})
    assert (settings["host"], settings["port"], settings["model"]) == ("127.0.0.1", 8001, "tiny")


def test_a_bad_setting_is_refused_with_a_message() -> None:
    out = subprocess.run(
        [sys.executable, "-c", READ, "--queue-capacity", "0"],
        env=offline_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == EXIT_CONFIG_REFUSED
    assert "queue_capacity" in out.stderr.lower() or "queue-capacity" in out.stderr


def test_fp8_on_cpu_workers_is_refused_at_start_up_with_a_clear_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "editor_service", "--devices", "cpu", "--port", "0"],
        env=offline_env(EDITOR_TRANSFORMER_FP8="row", EDITOR_LOAD_ON_START="false"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == EXIT_CONFIG_REFUSED  # a configuration error, not a crash (was 3)
    assert "cannot start, invalid settings" in out.stderr and "Traceback" not in out.stderr
    assert "transformer_fp8 needs CUDA GPUs" in out.stderr


def test_the_fixed_step_cache_is_configured_by_flags_and_excludes_the_other_cache() -> None:
    settings = settings_from({}, "--step-cache-interval", "4", "--step-cache-warmup", "2")
    assert (settings["step_cache_interval"], settings["step_cache_warmup"]) == (4, 2)
    out = subprocess.run(
        [sys.executable, "-c", READ, "--step-cache", "0.1", "--step-cache-interval", "3"],
        env=offline_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "two step caches" in out.stderr


def test_a_qwen_only_option_on_a_kontext_model_is_refused_at_start_up_naming_both() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "editor_service", "--model", "tiny-kontext", "--port", "0"],
        env=offline_env(EDITOR_FUSED_ATTENTION="1", EDITOR_LOAD_ON_START="false"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "cannot start" in out.stderr
    assert "fused_attention (EDITOR_FUSED_ATTENTION" in out.stderr
    assert "tiny-kontext is FLUX.1 Kontext" in out.stderr


def test_a_lora_for_a_family_without_a_lora_loader_is_refused_in_the_settings() -> None:
    with pytest.raises(ValidationError, match=r"lora .* tiny-longcat is LongCat-Image-Edit"):
        EditorSettings(model="tiny-longcat", lora="some/lora")
    with pytest.raises(ValidationError, match="LongCat-Image-Edit"):
        EditorSettings(model="meituan-longcat/LongCat-Image-Edit", lora="some/lora")
    # The same options where the family honours them, or a model whose family the folder says.
    assert EditorSettings(model="tiny-kontext", lora="some/lora").lora == "some/lora"
    assert EditorSettings(model="tiny", fused_attention=True).fused_attention
    assert EditorSettings(model="/models/some-folder", fused_attention=True).fused_attention


def test_the_model_setting_lists_every_hosted_familys_builtins_and_a_hub_id() -> None:
    described = EditorSettings.model_fields["model"].description or ""
    assert set(builtin_sources()) <= set(re.findall(r"[\w-]+", described))
    for family in FAMILIES:
        assert family.hub_ids[0] in described, family.name
