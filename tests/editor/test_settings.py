"""Settings as users give them: EDITOR_* variables, overridden by flags."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

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
    assert len(settings["api_keys"]) == 2  # secrets are not echoed


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
    assert out.returncode != 0
    assert "queue_capacity" in out.stderr or "queue-capacity" in out.stderr
