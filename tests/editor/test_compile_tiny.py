"""The compiled editor on the tiny model: after load() (warm-up included) nothing recompiles.

torch.compile's regional compilation is for GPUs, so here the blocks compile with a counting
backend that runs them eagerly (no code generation): what it counts is how often dynamo traced
a block, which is what a recompilation costs on a GPU (and a model whose dtype changed after the
warm-up also runs at that dtype there: float32 instead of bf16 is ~10x slower per step).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from editor_service.backends import diffusers_backend
from editor_service.backends.base import BackendSpec, EditJob, RGBImage
from editor_service.backends.diffusers_backend import DiffusersEditBackend
from tests.support.images import make_image

pytestmark = pytest.mark.tiny


def load_compiled(
    model: str, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[DiffusersEditBackend, CompileCounter, Any]:
    """``model`` loaded as on a GPU (bf16, compile on: fullgraph, so a graph break in a block
    fails the load), its blocks compiled on the CPU with a CompileCounter."""
    counter = CompileCounter()
    plain_tuning = diffusers_backend.apply_tuning

    def tuning_compiling_on_the_cpu(
        pipe: Any, options: dict[str, Any], device: str, **family: Any
    ) -> Any:
        applied = plain_tuning(pipe, {**options, "compile": False}, device, **family)
        pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=counter)
        return {**applied, "compile": "regional"}

    monkeypatch.setattr(diffusers_backend, "apply_tuning", tuning_compiling_on_the_cpu)
    torch._dynamo.reset()
    spec = BackendSpec(
        "diffusers", model, None, "bfloat16", str(model_cache), options={"compile": True}
    )
    backend = DiffusersEditBackend(spec)
    loaded = backend.load("cpu")
    return backend, counter, loaded


@pytest.fixture
def compiled(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bf16 tiny editor loaded with compile on, its blocks compiled with a CompileCounter."""
    backend, counter, loaded = load_compiled("tiny", model_cache, monkeypatch)
    assert loaded.details == {"compile": "regional"} and loaded.inpainting
    yield backend, counter
    torch._dynamo.reset()


def job(side: int, instruction: str, cfg: float, *, mask: bool = False) -> EditJob:
    masked = RGBImage.from_pil(make_image(48, 48, seed=2)) if mask else None
    return EditJob(
        job_id="1-compiled",
        image=RGBImage.from_pil(make_image(48, 48, seed=1)),
        instruction=instruction,
        negative_prompt=" ",
        num_inference_steps=2,
        true_cfg_scale=cfg,
        seed=3,
        width=side,
        height=1024,
        mask=masked,
    )


def test_edits_after_the_warm_up_do_not_recompile(compiled: Any) -> None:
    backend, counter = compiled
    warmed = counter.frame_count
    assert warmed > 0  # the warm-up compiled the blocks
    # load() kept the model's dtype: nothing (the inpainting pipeline included) recast it.
    modules = [c for c in backend.pipe.components.values() if isinstance(c, torch.nn.Module)]
    assert len(modules) >= 3  # the transformer, the VAE and the text encoder at least
    for component in modules:
        assert {p.dtype for p in component.parameters()} == {torch.bfloat16}
    for edit in [
        job(768, "turn the sky into a starry night over the hills", 4.0),
        job(1024, "add a small boat", 1.0, mask=True),  # the inpainting pipeline, no CFG
    ]:
        backend.edit(edit, lambda: False)
        assert counter.frame_count == warmed, f"{edit.width}x{edit.height} recompiled"


@pytest.fixture(params=["tiny-kontext", "tiny-longcat"])
def compiled_family(
    request: pytest.FixtureRequest, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """FLUX.1 Kontext or LongCat loaded as on a GPU (bf16, compile on: fullgraph, so a graph
    break in a block fails the load), its blocks compiled with a CompileCounter."""
    backend, counter, _ = load_compiled(request.param, model_cache, monkeypatch)
    yield backend, counter
    torch._dynamo.reset()


def test_other_families_edits_after_the_warm_up_do_not_recompile(compiled_family: Any) -> None:
    backend, counter = compiled_family
    warmed = counter.frame_count
    assert warmed > 0
    family = backend.family
    for width, height, mask in [(64, 48, False), (48, 64, False), (48, 48, True)]:
        if mask and not backend.inpaint_pipe:
            continue
        sized = family.takes_size and not mask
        edit = EditJob(
            job_id="1-compiled",
            image=RGBImage.from_pil(make_image(width, height, seed=1)),
            instruction="turn the sky into a starry night",
            negative_prompt=" ",
            num_inference_steps=2,
            true_cfg_scale=None,
            seed=3,
            width=16 * width if sized else None,
            height=16 * height if sized else None,
            mask=RGBImage.from_pil(make_image(width, height, seed=2)) if mask else None,
        )
        backend.edit(edit, lambda: False)
        assert counter.frame_count == warmed, f"{width}x{height} (mask: {mask}) recompiled"
