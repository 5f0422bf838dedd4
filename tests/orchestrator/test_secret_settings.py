"""The CLI's API keys from files (Docker/Swarm secrets): EDITBENCH_*_API_KEY_FILE."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, resolve_settings


def test_api_keys_are_read_from_the_files_the_variables_name(tmp_path: Path) -> None:
    (tmp_path / "editor").write_text("editor-key\n", encoding="utf-8")
    (tmp_path / "reward").write_text("reward-key", encoding="utf-8")
    settings = resolve_settings(
        {},
        environ={
            "EDITBENCH_EDITOR_API_KEY_FILE": str(tmp_path / "editor"),
            "EDITBENCH_REWARD_API_KEY_FILE": str(tmp_path / "reward"),
        },
    )
    assert settings.editor_api_key is not None and settings.reward_api_key is not None
    assert settings.editor_api_key.get_secret_value() == "editor-key"
    assert settings.reward_api_key.get_secret_value() == "reward-key"


def test_the_key_variable_wins_over_its_file(tmp_path: Path) -> None:
    (tmp_path / "editor").write_text("from-file", encoding="utf-8")
    environ = {
        "EDITBENCH_EDITOR_API_KEY": "from-variable",
        "EDITBENCH_EDITOR_API_KEY_FILE": str(tmp_path / "editor"),
    }
    settings = resolve_settings({}, environ=environ)
    assert settings.editor_api_key is not None
    assert settings.editor_api_key.get_secret_value() == "from-variable"


def test_a_key_file_that_cannot_be_read_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=r"EDITBENCH_REWARD_API_KEY_FILE.*absent"):
        resolve_settings({}, environ={"EDITBENCH_REWARD_API_KEY_FILE": str(missing)})
