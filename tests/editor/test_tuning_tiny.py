"""Model options of the editor on the tiny model: LoRA, step caches, FP8, compile on CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from editor_service.backends.base import BackendSpec, EditJob, RGBImage
from editor_service.backends.diffusers_backend import DiffusersEditBackend
from editor_service.backends.speed_modes import UnsupportedOption
from tests.support.images import make_image
from tests.support.tiny_lora import make_tiny_lora
from tiny_models.flux_kontext import ensure_tiny_folder as ensure_kontext_folder
from tiny_models.qwen_image_edit import ensure_tiny_folder

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


def full_block_runs(model_cache: Path, job: EditJob, **options: Any) -> tuple[list[int], Any]:
    """How often the first block's image MLP really ran in each of two edits of ``job``, and
    the last edit's image. A skipped block never calls its MLP; its own forward hooks would
    still fire, so they cannot count this."""
    spec = BackendSpec("diffusers", "tiny", None, "auto", str(model_cache), options=options)
    backend = DiffusersEditBackend(spec)
    backend.load("cpu")
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    backend.pipe.transformer.transformer_blocks[0].img_mlp.register_forward_hook(count)
    runs, images = [], []
    for _ in range(2):
        calls[0] = 0
        images.append(np.asarray(backend.edit(job, lambda: False).image.to_pil()))
        runs.append(calls[0])
    assert np.array_equal(images[0], images[1]), "the same seed gave two images"
    return runs, images[-1]


@pytest.mark.parametrize(
    ("steps", "cfg", "interval", "warmup", "full_steps"),
    [
        (10, 4.0, 3, 2, 5),  # steps 0, 1 (warm-up), then 3, 6, 9; in both CFG branches
        (10, 1.0, 3, 2, 5),
        (8, 1.0, 2, 3, 5),  # 0, 1, 2, then 4, 6
        (4, 4.0, 4, 3, 3),  # warm-up only: never past step 3
    ],
)
def test_the_fixed_step_cache_runs_the_blocks_on_its_schedule_in_every_edit(
    model_cache: Path, steps: int, cfg: float, interval: int, warmup: int, full_steps: int
) -> None:
    job = EditJob(**{**_fields(JOB), "num_inference_steps": steps, "true_cfg_scale": cfg})
    branches = 2 if cfg > 1 else 1
    runs, _ = full_block_runs(
        model_cache, job, step_cache_interval=interval, step_cache_warmup=warmup
    )
    assert runs == [full_steps * branches] * 2


def test_without_a_step_cache_the_blocks_run_on_every_step_of_each_cfg_branch(
    model_cache: Path,
) -> None:
    """What the schedule test counts: one MLP call per block run, so the plain model's count is
    steps x branches."""
    job = EditJob(**{**_fields(JOB), "num_inference_steps": 5, "true_cfg_scale": 4.0})
    runs, _ = full_block_runs(model_cache, job)
    assert runs == [10, 10]


def test_the_fixed_step_cache_changes_the_edit_and_is_recorded(
    model_cache: Path, plain: np.ndarray
) -> None:
    edited, details = run(model_cache, step_cache_interval=2, step_cache_warmup=1)
    assert details == {"step_cache_interval": 2, "step_cache_warmup": 1}
    assert edited.shape == plain.shape and not np.array_equal(edited, plain)


def test_an_edit_stopped_early_does_not_shift_the_next_edits_cache_schedule(
    model_cache: Path,
) -> None:
    spec = BackendSpec(
        "diffusers",
        "tiny",
        None,
        "auto",
        str(model_cache),
        options={"step_cache_interval": 3, "step_cache_warmup": 2},
    )
    backend = DiffusersEditBackend(spec)
    backend.load("cpu")
    first = np.asarray(backend.edit(JOB, lambda: False).image.to_pil())
    transformer = backend.pipe.transformer
    original = transformer.forward
    calls = [0]

    def fail_on_third_call(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("stopped mid-edit")
        return original(*args, **kwargs)

    transformer.forward = fail_on_third_call
    with pytest.raises(RuntimeError, match="stopped mid-edit"):
        backend.edit(JOB, lambda: False)
    transformer.forward = original
    again = np.asarray(backend.edit(JOB, lambda: False).image.to_pil())
    assert np.array_equal(first, again)


def test_two_step_caches_at_once_are_refused(model_cache: Path) -> None:
    with pytest.raises(UnsupportedOption, match="two step caches"):
        run(model_cache, step_cache=0.1, step_cache_interval=2)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_fp8_is_refused_on_the_cpu_with_a_clear_error(model_cache: Path, granularity: str) -> None:
    with pytest.raises(UnsupportedOption, match=r"needs a CUDA GPU .* device is cpu"):
        run(model_cache, transformer_fp8=granularity)


def _fields(job: EditJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__slots__}


def test_fused_attention_on_a_kontext_folder_is_refused_before_its_weights_load(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder names its family only through its pipeline class (model_index.json): the
    backend refuses there, before from_pretrained reads a weight."""
    import diffusers

    folder = ensure_kontext_folder(model_cache, "kontext")

    def no_weights(*_: Any, **__: Any) -> Any:
        raise AssertionError("the weights were read")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", no_weights)
    spec = BackendSpec(
        "diffusers", str(folder), None, "auto", str(model_cache), {"fused_attention": True}
    )
    with pytest.raises(UnsupportedOption, match=r"fused_attention .* is FLUX\.1 Kontext"):
        DiffusersEditBackend(spec).load("cpu")


def test_a_builtin_kontext_model_with_fused_attention_is_refused_before_it_is_built(
    tmp_path: Path,
) -> None:
    spec = BackendSpec(
        "diffusers", "tiny-kontext", None, "auto", str(tmp_path), {"fused_attention": True}
    )
    with pytest.raises(UnsupportedOption, match=r"tiny-kontext is FLUX\.1 Kontext"):
        DiffusersEditBackend(spec).load("cpu")
    assert not list(tmp_path.iterdir())  # nothing built


def test_kontexts_parked_text_encoders_are_clip_and_t5_and_the_edit_is_the_same(
    model_cache: Path,
) -> None:
    from editor_service.backends import parking

    job = dataclasses.replace(JOB, num_inference_steps=2, true_cfg_scale=None, parameters={})
    images, made = [], []
    original = parking.park_text_encoder

    def recording(pipe: Any, device: str, *encoders: Any) -> list[parking.ParkedModule]:
        made.append(original(pipe, device, *encoders))
        return made[-1]

    for park in (False, True):
        spec = BackendSpec(
            "diffusers",
            "tiny-kontext",
            None,
            "float32",
            str(model_cache),
            {"park_text_encoder": park},
        )
        backend = DiffusersEditBackend(spec)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(parking, "park_text_encoder", recording)
            backend.load("cpu")
        images.append(np.asarray(backend.edit(job, lambda: False).image.to_pil()))
    (parked,) = made
    for name in ("text_encoder", "text_encoder_2"):  # CLIP and T5
        encoder = getattr(backend.pipe, name)
        linears = {id(m) for m in encoder.modules() if isinstance(m, torch.nn.Linear)}
        assert linears & {id(p.module) for p in parked}, name
    assert all(p.arrivals >= 1 and not p.on_device for p in parked)
    assert np.array_equal(images[0], images[1])
