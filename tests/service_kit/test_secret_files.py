"""Settings from secret files: Docker and Swarm secrets are files under /run/secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from editor_service.config import EditorSettings
from reward_service.config import RewardSettings
from service_kit.settings import ServiceSettings, load_settings

SERVICES = [(EditorSettings, "EDITOR_"), (RewardSettings, "REWARD_")]


@pytest.mark.parametrize(("cls", "prefix"), SERVICES)
def test_api_keys_are_read_from_a_secret_file_named_like_the_variable(
    cls: type[ServiceSettings], prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"{prefix}API_KEYS", raising=False)
    (tmp_path / f"{prefix.lower()}api_keys").write_text("first-key, second-key\n")
    settings = load_settings(cls, "service", [], secrets_dir=tmp_path)
    assert [k.get_secret_value() for k in settings.api_keys] == ["first-key", "second-key"]


@pytest.mark.parametrize(("cls", "prefix"), SERVICES)
def test_a_variable_wins_over_the_secret_file(
    cls: type[ServiceSettings], prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / f"{prefix.lower()}api_keys").write_text("from-file")
    monkeypatch.setenv(f"{prefix}API_KEYS", "from-env")
    settings = load_settings(cls, "service", [], secrets_dir=tmp_path)
    assert [k.get_secret_value() for k in settings.api_keys] == ["from-env"]


def test_no_secrets_folder_means_no_keys_and_no_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDITOR_API_KEYS", raising=False)
    settings = load_settings(EditorSettings, "service", [], secrets_dir=tmp_path / "absent")
    assert settings.api_keys == []
