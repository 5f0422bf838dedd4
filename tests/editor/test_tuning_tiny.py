"""Model options of the editor on the tiny model: LoRA fusing, step cache, compile off on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from editor_service.backends.base import BackendSpec, EditJob, RGBImage
from editor_service.backends.diffusers_backend import DiffusersEditBackend
from editor_service.models.qwen_image import ensure_tiny_folder
from tests.support.images import make_image
from tests.support.tiny_lora import make_tiny_lora

pytestmark = pytest.mark.tiny

JOB = EditJob(
    job_id="1-tuning",
    image=RGBImage.from_pil(make_image(32, 32, seed=4)),
    instruction="make it snowy",
    negative_prompt=" ",
    num_inference_steps=4,
    true_cfg_scale=4.0,
    seed=9,
    width=32,
    height=32,
)


def run(model_cache: Path, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    spec = BackendSpec("diffusers", "tiny", None, "auto", str(model_cache), options=options)
    backend = DiffusersEditBackend(spec)
    loaded = backend.load("cpu")
    output = backend.edit(JOB, lambda: False)
    return np.asarray(output.image.to_pil()), loaded.details


@pytest.fixture(scope="module")
def plain(model_cache: Path) -> np.ndarray:
    return run(model_cache)[0]


@pytest.fixture(scope="module")
def lora_file(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = ensure_tiny_folder(model_cache, "edit")
    return make_tiny_lora(folder, tmp_path_factory.mktemp("lora"))


def test_a_fused_lora_changes_the_edit_and_is_recorded(
    model_cache: Path, plain: np.ndarray, lora_file: Path
) -> None:
    edited, details = run(model_cache, lora=str(lora_file.parent), lora_weight_name=lora_file.name)
    assert not np.array_equal(edited, plain)
    assert details == {"lora": str(lora_file.parent), "lora_scale": 1.0}


def test_a_lora_at_scale_zero_leaves_the_model_as_it_was(
    model_cache: Path, plain: np.ndarray, lora_file: Path
) -> None:
    edited, _ = run(
        model_cache, lora=str(lora_file.parent), lora_weight_name=lora_file.name, lora_scale=0.0
    )
    assert np.abs(edited.astype(int) - plain.astype(int)).max() <= 1


def test_step_cache_runs_and_is_recorded(model_cache: Path) -> None:
    edited, details = run(model_cache, step_cache=0.5)
    assert details == {"step_cache": 0.5}
    assert edited.shape == (32, 32, 3) and edited.std() > 0


def test_compile_is_skipped_on_the_cpu(model_cache: Path, plain: np.ndarray) -> None:
    edited, details = run(model_cache, compile=True, attention_backend="native")
    assert details == {"attention_backend": "native"}
    assert np.array_equal(edited, plain)
