"""Qwen-Image's fused joint attention (editor_service.backends.qwen_kernels) on the tiny model.

It must compute what diffusers' own processor computes (float32 here, so only rounding may differ),
with and without a text mask and behind a chosen attention backend, and trace into one graph per
block under torch.compile. It is an option (EDITOR_FUSED_ATTENTION): on an H100 it measured no
faster than diffusers' processor compiled (docs/PERFORMANCE.md). The text encoder's parking
(editor_service.backends.parking) is tested here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import QwenImageTransformer2DModel
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0
from torch._dynamo.testing import CompileCounter

from editor_service.backends import qwen_kernels
from editor_service.backends.base import BackendSpec, EditJob, RGBImage
from editor_service.backends.diffusers_backend import DiffusersEditBackend, compile_wanted
from editor_service.config import EditorSettings
from tests.support.images import make_image
from tiny_models.qwen_image_edit import transformer_config

pytestmark = pytest.mark.tiny

IMAGE_TOKENS = [(1, 4, 4), (1, 4, 6)]  # an edit: the noise latents, then the source image's


def transformer(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = QwenImageTransformer2DModel(**transformer_config("tiny")).eval()
    return model


def inputs(seed: int, text_tokens: int, *, masked: bool) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    image_tokens = sum(f * h * w for f, h, w in IMAGE_TOKENS)
    mask = torch.ones(1, text_tokens, dtype=torch.long)
    if masked:
        mask[:, text_tokens - 3 :] = 0  # padding at the end of the prompt
    return {
        "hidden_states": torch.randn(1, image_tokens, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, text_tokens, 64, generator=g),
        "encoder_hidden_states_mask": mask if masked else None,
        "timestep": torch.tensor([0.7]),
        "img_shapes": [IMAGE_TOKENS],
        "return_dict": False,
    }


def forward(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = model(**batch)[0]
    return out


def reference(model: Any) -> None:
    for block in model.transformer_blocks:
        block.attn.set_processor(QwenDoubleStreamAttnProcessor2_0())


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_fused_attention_computes_what_diffusers_processor_computes(
    seed: int, masked: bool
) -> None:
    model = transformer(seed)
    batch = inputs(seed, text_tokens=7 + seed, masked=masked)
    expected = forward(model, batch)
    assert qwen_kernels.install(model)
    assert all(
        isinstance(b.attn.processor, qwen_kernels.QwenJointAttention)
        for b in model.transformer_blocks
    )
    got = forward(model, batch)
    assert torch.isfinite(got).all()
    error = (got - expected).norm() / expected.norm()
    assert error < 1e-5, f"relative error {error:.2e}"
    reference(model)  # and back: the reference again gives the reference's numbers
    assert torch.equal(forward(model, batch), expected)


def test_rotation_matches_the_complex_product() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 9, 3, 8, generator=g).to(torch.bfloat16)
    angles = torch.randn(9, 4, generator=g, dtype=torch.float64).float()
    freqs = torch.polar(torch.ones_like(angles), angles)
    complex_x = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    expected = torch.view_as_real(complex_x * freqs[:, None]).flatten(3).to(x.dtype)
    got = qwen_kernels.rotate(x, freqs)
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    # float32 products, one bf16 rounding: equal but for a rare last-bit difference.
    assert (got.float() - expected.float()).abs().max() <= 2**-7 * expected.float().abs().max()


def test_a_chosen_attention_backend_goes_through_diffusers_dispatcher() -> None:
    model = transformer(3)
    batch = inputs(3, text_tokens=6, masked=True)
    expected = forward(model, batch)
    qwen_kernels.install(model)
    model.set_attention_backend("native")
    processors = {type(b.attn.processor) for b in model.transformer_blocks}
    assert processors == {qwen_kernels.QwenJointAttention}
    assert all(b.attn.processor._attention_backend is not None for b in model.transformer_blocks)
    got = forward(model, batch)
    assert (got - expected).norm() / expected.norm() < 1e-5


def test_each_block_compiles_into_one_graph_and_new_shapes_reuse_it_after_the_warm_up() -> None:
    model = transformer(4)
    qwen_kernels.install(model)
    counter = CompileCounter()
    torch._dynamo.reset()
    try:
        # As the editor does it: fullgraph (a graph break inside a block raises instead of
        # splitting it), then a warm-up of two shapes, after which the shapes are dynamic.
        model.compile_repeated_blocks(fullgraph=True, backend=counter)
        forward(model, inputs(1, text_tokens=8, masked=False))
        forward(model, inputs(2, text_tokens=11, masked=False))
        warmed = counter.frame_count
        assert warmed >= 1
        forward(model, inputs(3, text_tokens=14, masked=False))  # a third prompt length
        assert counter.frame_count == warmed
    finally:
        torch._dynamo.reset()


def test_other_transformers_keep_their_processors() -> None:
    assert not qwen_kernels.install(torch.nn.Linear(2, 2))


def test_compile_is_on_by_default_on_cuda_devices_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "gcc")  # a C compiler for Triton (tests/service_kit/test_compiling.py)
    assert EditorSettings().backend_spec().options["compile"] is None
    assert compile_wanted({"compile": None}, "cuda:0")
    assert compile_wanted({}, "cuda:1")
    assert not compile_wanted({"compile": None}, "cpu")
    assert not compile_wanted({"compile": False}, "cuda:0")
    assert compile_wanted({"compile": True}, "cpu")  # asked for: apply_tuning says it can't


def test_compile_is_off_by_default_without_a_c_compiler_for_triton(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", "")
    assert not compile_wanted({}, "cuda:0")
    assert compile_wanted({"compile": True}, "cuda:0")  # asked for: as set


def edit_with(model_cache: Path, **options: Any) -> tuple[np.ndarray, Any]:
    spec = BackendSpec("diffusers", "tiny", None, "float32", str(model_cache), options=options)
    backend = DiffusersEditBackend(spec)
    backend.load("cpu")
    job = EditJob(
        job_id="1-fused",
        image=RGBImage.from_pil(make_image(32, 32, seed=6)),
        instruction="make it snowy",
        negative_prompt=" ",
        num_inference_steps=3,
        true_cfg_scale=4.0,
        seed=11,
        width=32,
        height=32,
    )
    image = np.asarray(backend.edit(job, lambda: False).image.to_pil())
    return image, backend.pipe.transformer.transformer_blocks[0].attn.processor


def test_the_fused_attention_is_an_option_and_diffusers_processor_the_default(
    model_cache: Path,
) -> None:
    fused, processor = edit_with(model_cache, fused_attention=True)
    assert isinstance(processor, qwen_kernels.QwenJointAttention)
    plain, processor = edit_with(model_cache)
    assert isinstance(processor, QwenDoubleStreamAttnProcessor2_0)
    # The same edit: float32 rounding apart, the same 8-bit pixels (at most one level).
    assert np.abs(fused.astype(int) - plain.astype(int)).max() <= 1
    assert EditorSettings().backend_spec().options["fused_attention"] is False
    assert EditorSettings(fused_attention=True).backend_spec().options["fused_attention"] is True


def test_a_parked_text_encoder_waits_in_host_memory_and_the_edit_is_the_same(
    model_cache: Path,
) -> None:
    from editor_service.backends import parking

    plain, _ = edit_with(model_cache, fused_attention=False)
    made: list[list[parking.ParkedModule]] = []
    original = parking.park_text_encoder

    def recording(pipe: Any, device: str, *encoders: Any) -> list[parking.ParkedModule]:
        made.append(original(pipe, device, *encoders))
        return made[-1]

    spec = BackendSpec(
        "diffusers",
        "tiny",
        None,
        "float32",
        str(model_cache),
        {"park_text_encoder": True, "fused_attention": False},
    )
    backend = DiffusersEditBackend(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parking, "park_text_encoder", recording)
        backend.load("cpu")
    (parked,) = made
    encoder = backend.pipe.text_encoder
    linears = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert parked and {id(p.module) for p in parked} <= {id(m) for m in linears}
    assert all(not p.on_device and p.arrivals == 0 for p in parked)
    job = EditJob(
        job_id="1-parked",
        image=RGBImage.from_pil(make_image(32, 32, seed=6)),
        instruction="make it snowy",
        negative_prompt=" ",
        num_inference_steps=3,
        true_cfg_scale=4.0,
        seed=11,
        width=32,
        height=32,
    )
    image = np.asarray(backend.edit(job, lambda: False).image.to_pil())
    # Each layer came for its own calls (prompt and negative prompt) and left after each.
    assert all(p.arrivals >= 2 and not p.on_device for p in parked)
    for p in parked:
        for tensor, host in p.tensors:
            assert tensor.data_ptr() == host.data_ptr()
    assert np.array_equal(image, plain)


def test_a_parked_module_computes_what_it_did_and_can_be_unparked() -> None:
    from editor_service.backends.parking import ParkedModule

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    x = torch.randn(3, 4)
    expected = module(x)
    parked = ParkedModule(module, "cpu", between_calls=False)
    first = next(module.parameters())
    stored = first.data_ptr()
    with torch.inference_mode():
        got = module(x)  # the pre-hook brings a fresh copy ("the device": another buffer here)
    assert torch.equal(got, expected) and parked.on_device
    assert first.data_ptr() != stored
    parked.park()
    assert first.data_ptr() == stored and not parked.on_device
    parked.remove()
    assert parked.on_device and not module._forward_pre_hooks
    assert torch.equal(module(x), expected)


def test_a_module_parked_between_calls_leaves_after_each_forward() -> None:
    from editor_service.backends.parking import ParkedModule

    torch.manual_seed(1)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    expected = layer(x)
    parked = ParkedModule(layer, "cpu", between_calls=True)
    for calls in (1, 2):
        with torch.inference_mode():
            assert torch.equal(layer(x), expected)
        assert parked.arrivals == calls and not parked.on_device
        assert layer.weight.data_ptr() == parked.tensors[0][1].data_ptr()
