"""REWARD_* settings and command-line flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reward_service.config import RewardSettings
from service_kit.settings import load_settings


def test_defaults_serve_the_tiny_judge_on_port_8002() -> None:
    settings = load_settings(RewardSettings, "reward", [])
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8002, "tiny")
    assert (settings.backend, settings.devices, settings.dtype) == ("transformers", [], "auto")
    assert settings.load_on_start is True
    assert settings.max_batch_images >= 1 and settings.max_wait_s >= 0


def test_flags_set_batching_and_model_settings() -> None:
    argv = ["--model", "tiny-moe", "--max-batch-images", "8", "--max-wait-s", "0.05"]
    argv += ["--devices", "0,cuda:1", "--protocols-dir", "/srv/protocols", "--queue-capacity", "64"]
    settings = load_settings(RewardSettings, "reward", argv)
    assert settings.model == "tiny-moe"
    assert (settings.max_batch_images, settings.max_wait_s, settings.queue_capacity) == (
        8,
        0.05,
        64,
    )
    assert settings.devices == ["cuda:0", "cuda:1"]
    assert str(settings.protocols_dir) == "/srv/protocols"


def test_backend_options_come_as_json_and_reach_the_backend_spec() -> None:
    argv = ["--backend-options", '{"attn_implementation": "eager"}', "--revision", "abc"]
    settings = load_settings(RewardSettings, "reward", argv)
    spec = settings.backend_spec()
    assert spec.options == {"attn_implementation": "eager"} and spec.revision == "abc"


def test_explicit_devices_are_used_without_probing() -> None:
    assert RewardSettings(devices=["cpu"]).resolve_devices() == ["cpu"]
    assert RewardSettings(devices="cuda:1, cuda:0").resolve_devices() == ["cuda:1", "cuda:0"]


@pytest.mark.parametrize(
    "bad", [{"devices": "tpu"}, {"max_batch_images": 0}, {"max_wait_s": -1}, {"dtype": "int8"}]
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=rf"\n{next(iter(bad))}\n"):  # names the setting
        RewardSettings.model_validate(bad)


def test_deterministic_mode_is_off_by_default_and_reaches_the_backend_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RewardSettings().backend_spec().deterministic is False
    monkeypatch.setenv("REWARD_DETERMINISTIC", "true")
    assert load_settings(RewardSettings, "reward", []).backend_spec().deterministic is True
