"""What both services share instead of copying: model settings, a worker failure's answer, and
the model folders their loaders build and load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from editor_service.config import EditorSettings
from reward_service.config import RewardSettings
from service_kit.errors import FailureKind, worker_failure
from service_kit.models.loading import RECIPE_FILE, ensure_built, model_folder
from service_kit.models.sources import ModelSource, folder_revision
from service_kit.settings import ModelServiceSettings

SERVICES = [EditorSettings, RewardSettings]


@pytest.mark.parametrize("cls", SERVICES)
def test_both_services_normalise_their_devices_the_same_way(
    cls: type[ModelServiceSettings],
) -> None:
    settings = cls(devices="0, cuda ,CPU,cuda:3")
    assert settings.devices == ["cuda:0", "cuda:0", "cpu", "cuda:3"]
    assert settings.resolve_devices() == ["cuda:0", "cuda:0", "cpu", "cuda:3"]


@pytest.mark.parametrize("cls", SERVICES)
def test_both_services_refuse_an_unknown_device_when_configured(
    cls: type[ModelServiceSettings],
) -> None:
    with pytest.raises(ValidationError, match="unknown device 'tpu'"):
        cls(devices="cpu,tpu")


@pytest.mark.parametrize("cls", SERVICES)
def test_the_replica_config_carries_the_services_restart_and_load_settings(
    cls: type[ModelServiceSettings],
) -> None:
    settings = cls(max_worker_restarts=2, restart_window_s=9.0, load_on_start=False)
    config = settings.replica_config("x-worker", "model")
    assert (config.name, config.noun, config.load_on_start) == ("x-worker", "model", False)
    assert (config.policy.max_restarts, config.policy.window_s) == (2, 9.0)


def test_editor_options_the_devices_named_cannot_run_are_refused_with_the_settings() -> None:
    with pytest.raises(ValueError, match="transformer_fp8 needs CUDA GPUs"):
        EditorSettings(devices="cuda:0,cpu", transformer_fp8="row")
    assert EditorSettings(devices="0", transformer_fp8="row").devices == ["cuda:0"]


@pytest.mark.parametrize(
    ("kind", "param", "status", "error_type", "retryable"),
    [
        ("invalid_input", None, 400, "invalid_image", False),
        ("invalid_input", "image", 400, "invalid_image", False),
        ("invalid_input", "width", 400, "invalid_input", False),
        ("out_of_memory", None, 507, "out_of_memory", True),
        ("cancelled", None, 503, "not_ready", True),
        ("endpoint_unavailable", None, 503, "upstream_unavailable", True),
        ("endpoint_refused", None, 502, "upstream_error", False),
        ("backend_error", None, 500, "backend_error", False),
    ],
)
def test_a_worker_failure_gets_the_same_answer_on_both_services(
    kind: FailureKind, param: str | None, status: int, error_type: str, retryable: bool
) -> None:
    error = worker_failure(kind, "what happened", param)
    assert (error.status_code, error.error_type) == (status, error_type)
    assert ("Retry-After" in error.headers()) is retryable
    if kind == "invalid_input":
        assert error.param == (param or "image")


def test_a_model_folder_is_built_once_and_then_reused(tmp_path: Path) -> None:
    built: list[Path] = []

    def save(staging: Path) -> None:
        built.append(staging)
        staging.mkdir()
        (staging / "config.json").write_text("{}")

    folder = tmp_path / "cache" / "tiny-x-v1"
    recipe = {"recipe": "tiny", "variant": "x", "version": 1}
    assert ensure_built(folder, "config.json", save, recipe) == folder
    assert ensure_built(folder, "config.json", save, recipe) == folder
    assert len(built) == 1 and built[0].name == "tiny-x-v1.partial"
    assert json.loads((folder / RECIPE_FILE).read_text()) == recipe
    assert not built[0].exists()  # renamed into place


def test_a_half_written_folder_from_a_killed_build_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-x-v1"
    stale = folder.with_name("tiny-x-v1.partial")
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"\0" * 10)

    def save(staging: Path) -> None:
        staging.mkdir()  # fails if the killed build's folder were still there
        (staging / "config.json").write_text("{}")

    ensure_built(folder, "config.json", save, {"recipe": "tiny"})
    assert sorted(p.name for p in folder.iterdir()) == sorted([RECIPE_FILE, "config.json"])


def test_model_folder_names_the_revision_of_a_tiny_build_and_a_local_folder(
    tmp_path: Path,
) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "config.json").write_text("{}")
    (tiny / "model.safetensors").write_bytes(b"weights")
    folder, revision = model_folder(ModelSource("tiny", "tiny", "dense"), None, lambda: tiny)
    assert (folder, revision) == (tiny, folder_revision(tiny, include_weights=True))

    local = ModelSource("local", str(tiny))
    assert model_folder(local, "ignored", lambda: pytest.fail("no build"))[1] == folder_revision(
        tiny
    )
    snapshot = tmp_path / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    assert model_folder(ModelSource("local", str(snapshot)), None, lambda: tiny) == (
        snapshot,
        "a" * 40,
    )
