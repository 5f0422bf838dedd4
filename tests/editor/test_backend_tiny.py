"""The diffusers backend in-process, on the tiny models of both pipeline classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from editor_service.backends.base import BackendSpec, EditJob, InvalidJob, JobCancelled, RGBImage
from editor_service.backends.diffusers_backend import DiffusersEditBackend
from tests.support.images import make_image

pytestmark = pytest.mark.tiny


def job(**changes: object) -> EditJob:
    fields: dict[str, object] = {
        "job_id": "1-test",
        "image": RGBImage.from_pil(make_image(40, 56, seed=1)),
        "instruction": "add a hat",
        "negative_prompt": " ",
        "num_inference_steps": 2,
        "true_cfg_scale": 4.0,
        "seed": 3,
        "width": 32,
        "height": 48,
    }
    fields.update(changes)
    return EditJob(**fields)  # type: ignore[arg-type]


def never() -> bool:
    return False


def pixels(image: RGBImage) -> np.ndarray:
    return np.asarray(image.to_pil())


@pytest.fixture(scope="module", params=["tiny", "tiny-plus"])
def backend(request: pytest.FixtureRequest, model_cache: Path) -> DiffusersEditBackend:
    spec = BackendSpec("diffusers", request.param, None, "auto", str(model_cache))
    backend = DiffusersEditBackend(spec)
    backend.load("cpu")
    return backend


def test_both_pipeline_classes_load_from_their_folder(backend: DiffusersEditBackend) -> None:
    expected = (
        "QwenImageEditPlusPipeline"
        if backend.source.name == "tiny-plus"
        else ("QwenImageEditPipeline")
    )
    assert type(backend.pipe).__name__ == expected


def test_edit_output_has_the_requested_size_and_is_deterministic(
    backend: DiffusersEditBackend,
) -> None:
    first = backend.edit(job(), never)
    second = backend.edit(job(), never)
    assert (first.image.width, first.image.height) == (32, 48)
    assert np.array_equal(pixels(first.image), pixels(second.image))
    assert len(np.unique(pixels(first.image))) > 16  # an image, not a blank or constant one


def test_true_cfg_changes_the_output(backend: DiffusersEditBackend) -> None:
    with_cfg = backend.edit(job(), never)
    without_cfg = backend.edit(job(true_cfg_scale=1.0), never)
    assert not np.array_equal(pixels(with_cfg.image), pixels(without_cfg.image))


def test_default_size_follows_the_source_aspect_at_about_a_megapixel(
    backend: DiffusersEditBackend,
) -> None:
    output = backend.edit(job(width=None, height=None), never)
    width, height = output.image.width, output.image.height
    assert width % 16 == 0 and height % 16 == 0
    assert 0.8e6 < width * height < 1.2e6
    assert height > width  # the source is 40x56


def test_a_stop_request_cancels_the_job(backend: DiffusersEditBackend) -> None:
    """The stop is asked after each step and the steps left are skipped (counted as transformer
    calls): not a whole edit computed and then called cancelled."""
    pipe = backend.pipe
    assert pipe is not None
    calls: list[int] = []
    counting = pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    steps = 4
    try:
        with pytest.raises(JobCancelled):
            backend.edit(job(num_inference_steps=steps), lambda: True)
    finally:
        counting.remove()
    assert len(calls) == 2 < 2 * steps  # the first step's two calls (true CFG), then none


def test_the_backend_refuses_control_tokens_itself_and_reports_its_reserved_set(
    backend: DiffusersEditBackend,
) -> None:
    # The defence behind the route's check: the tokenizer itself decides, per field.
    model = backend.load("cpu")
    assert {"<|im_end|>", "<|image_pad|>", "<|vision_start|>"} <= set(model.reserved_text)
    for field in ("instruction", "negative_prompt"):
        with pytest.raises(
            InvalidJob, match=r"contains '<\|image_pad\|>', one of the model's c"
        ) as refused:
            backend.edit(job(**{field: "add <|image_pad|> a hat"}), never)
        assert refused.value.param == field
    near_miss = backend.edit(job(instruction="add <|image_pad a hat |>"), never)
    assert (near_miss.image.width, near_miss.image.height) == (32, 48)


@pytest.fixture(scope="module")
def longcat(model_cache: Path) -> DiffusersEditBackend:
    backend = DiffusersEditBackend(
        BackendSpec("diffusers", "tiny-longcat", None, "auto", str(model_cache))
    )
    backend.load("cpu")
    return backend


def test_a_cancelled_longcat_edit_stops_before_its_last_step(
    longcat: DiffusersEditBackend,
) -> None:
    """LongCat's pipeline takes no step callback: the backend's hook on its transformer sets
    the interrupt flag, and the steps left are skipped (counted as transformer calls)."""
    pipe = longcat.pipe
    assert pipe is not None
    calls: list[int] = []
    counting = pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    asked: list[int] = []

    def stop_after_the_first_step() -> bool:  # CFG: two transformer calls a step
        asked.append(1)
        return len(asked) >= 2

    steps = 3
    longcat_job = job(
        width=None, height=None, true_cfg_scale=None, num_inference_steps=steps, negative_prompt="x"
    )
    try:
        with pytest.raises(JobCancelled):
            longcat.edit(longcat_job, stop_after_the_first_step)
    finally:
        counting.remove()
    assert len(calls) == 2 < 2 * steps  # one step's two calls ran, then none
    assert len(asked) == 2  # asked after each call until the stop
    # The stop hook lives for one edit only: none is left on the transformer.
    assert not pipe.transformer._forward_hooks
