"""FLUX.1 Kontext's masks in-process: the backend builds FluxKontextInpaintPipeline on the tiny
build's components, and a masked edit changes only the masked region as that pipeline defines
it: after every step it puts the source's latents back where the mask keeps, so the latents it
decodes equal the source's there whatever the seed, instruction or guidance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from editor_service.backends.base import BackendSpec, EditJob, RGBImage
from editor_service.backends.diffusers_backend import DiffusersEditBackend
from tests.support.images import make_image

pytestmark = pytest.mark.tiny

SIDE = 64  # a square source: Kontext works at its preferred 1024x1024, latents 128x128


@pytest.fixture(scope="module")
def kontext(model_cache: Path) -> DiffusersEditBackend:
    spec = BackendSpec("diffusers", "tiny-kontext", None, "auto", str(model_cache))
    backend = DiffusersEditBackend(spec)
    loaded = backend.load("cpu")
    assert loaded.inpainting and loaded.family == "flux-kontext"
    return backend


def left_half_mask() -> RGBImage:
    """White (edit) on the left half, black (keep) on the right, as the route hands it over."""
    mask = Image.new("RGB", (SIDE, SIDE), (0, 0, 0))
    mask.paste((255, 255, 255), (0, 0, SIDE // 2, SIDE))
    return RGBImage.from_pil(mask)


def masked_job(seed: int, instruction: str, guidance: float) -> EditJob:
    return EditJob(
        job_id=f"{seed}-mask",
        image=RGBImage.from_pil(make_image(SIDE, SIDE, seed=1)),
        instruction=instruction,
        negative_prompt=" ",
        num_inference_steps=2,
        true_cfg_scale=None,
        seed=seed,
        width=None,
        height=None,
        mask=left_half_mask(),
        parameters={"guidance_scale": guidance},
    )


def decoded_latents(
    backend: DiffusersEditBackend, job: EditJob, monkeypatch: pytest.MonkeyPatch
) -> torch.Tensor:
    """The latents the pipeline hands its VAE decoder for this edit ([1, 16, H/8, W/8])."""
    vae = backend.inpaint_pipe.vae
    decode = vae.decode
    seen: list[torch.Tensor] = []

    def watched(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(latents.detach().clone())
        return decode(latents, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(vae, "decode", watched)
        output = backend.edit(job, lambda: False)
    assert (output.image.width, output.image.height) == (1024, 1024)
    assert len(seen) == 1
    return seen[0]


def test_kontext_builds_its_inpainting_pipeline_on_the_same_components(
    kontext: DiffusersEditBackend,
) -> None:
    assert type(kontext.pipe).__name__ == "FluxKontextPipeline"
    assert type(kontext.inpaint_pipe).__name__ == "FluxKontextInpaintPipeline"
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert getattr(kontext.inpaint_pipe, name) is getattr(kontext.pipe, name), name


def test_a_masked_edit_changes_the_masked_latents_only(
    kontext: DiffusersEditBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = decoded_latents(kontext, masked_job(1, "make the sky red", 2.5), monkeypatch)
    second = decoded_latents(kontext, masked_job(2, "add a boat on the lake", 4.0), monkeypatch)
    assert first.shape == (1, 16, 128, 128)
    half = first.shape[-1] // 2
    # Kept (black) right half: the source's latents in both edits, bit for bit.
    assert torch.equal(first[..., half:], second[..., half:])
    # Masked (white) left half: made anew from each edit's own noise and prompt.
    assert not torch.allclose(first[..., :half], second[..., :half])
    assert torch.isfinite(first).all() and torch.isfinite(second).all()
