"""Qwen-Image-Edit(-Plus) through diffusers: the one real editing backend.

Runs inside a worker process only. The pipeline class comes from the model folder
(``DiffusionPipeline.from_pretrained``), so Edit and Edit-Plus checkpoints both load; built-in
sources (``tiny``, ``random-full``) go through editor_service.models.qwen_image.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editor_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EditJob,
    EditOutput,
    InvalidJob,
    JobCancelled,
    LoadedModel,
)
from service_kit.errors import ServiceError
from service_kit.images import decode_image, encode_image
from service_kit.model_source import (
    ModelSource,
    SourceKind,
    folder_revision,
    hub_snapshot,
    parse_model_source,
    snapshot_revision,
)

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)

BUILTIN_SOURCES: dict[str, tuple[SourceKind, str]] = {
    "tiny": ("tiny", "edit"),
    "tiny-plus": ("tiny", "edit-plus"),
    "random-full": ("random-full", "edit"),
    "random-full-plus": ("random-full", "edit-plus"),
}

# The API process has already checked the image against its own limit.
_NO_PIXEL_LIMIT = 2**40


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on accelerators, float32 on the CPU."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


class DiffusersEditBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.source: ModelSource = parse_model_source(spec.model, BUILTIN_SOURCES)
        self.pipe: DiffusionPipeline | None = None
        self.device = "cpu"

    def load(self, device: str) -> LoadedModel:
        import diffusers
        import transformers
        from diffusers import DiffusionPipeline

        from editor_service.models.qwen_image import build_pipeline, ensure_tiny_folder

        # Progress bars are noise in a service log; the worker logs each job instead.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        dtype = resolve_dtype(self.spec.dtype, device)
        source = self.source
        started = time.perf_counter()
        if source.kind == "random-full":
            variant = "edit-plus" if source.variant == "edit-plus" else "edit"
            pipe = build_pipeline("full", variant, device=device, dtype=dtype)
            revision: str | None = "random-init-seed-0"
        else:
            if source.kind == "tiny":
                variant = "edit-plus" if source.variant == "edit-plus" else "edit"
                folder = ensure_tiny_folder(Path(self.spec.cache_dir), variant)
                revision = folder_revision(folder, include_weights=True)
            elif source.kind == "local":
                folder = Path(source.name)
                revision = snapshot_revision(folder) or folder_revision(folder)
            else:
                folder = hub_snapshot(source.name, self.spec.revision)
                revision = snapshot_revision(folder) or self.spec.revision
            pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype)
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.device = device
        logger.info(
            "loaded %s (%s) on %s as %s in %.1fs",
            source.name,
            type(pipe).__name__,
            device,
            dtype,
            time.perf_counter() - started,
        )
        return LoadedModel(
            id=source.name,
            source=source.kind,
            revision=revision,
            model_class=type(pipe).__name__,
            dtype=str(dtype).removeprefix("torch."),
            meaningful=source.meaningful,
        )

    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        import torch

        if self.pipe is None:
            raise RuntimeError("edit() before load()")
        try:
            image = decode_image(job.image, max_pixels=_NO_PIXEL_LIMIT)
        except ServiceError as exc:
            raise InvalidJob(exc.message) from None

        def on_step_end(
            pipe: Any, _step: int, _timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            if should_stop():
                pipe._interrupt = True
            return callback_kwargs

        use_cfg = job.true_cfg_scale > 1.0
        kwargs: dict[str, Any] = {
            "image": image,
            "prompt": job.instruction,
            "negative_prompt": job.negative_prompt if use_cfg else None,
            "true_cfg_scale": job.true_cfg_scale,
            "num_inference_steps": job.num_inference_steps,
            "generator": torch.Generator(device=self.device).manual_seed(job.seed),
            "callback_on_step_end": on_step_end,
        }
        if job.width is not None and job.height is not None:
            kwargs["width"], kwargs["height"] = job.width, job.height

        started = time.perf_counter()
        try:
            with torch.inference_mode():
                result = self.pipe(**kwargs).images[0]
        except torch.OutOfMemoryError:
            self._free_cached_memory()
            raise DeviceOutOfMemory(
                f"out of device memory on {self.device} for a "
                f"{kwargs.get('width', 'default')}x{kwargs.get('height', 'default')} edit"
            ) from None
        pipeline_s = time.perf_counter() - started
        if getattr(self.pipe, "_interrupt", False):
            raise JobCancelled(job.job_id)
        return EditOutput(
            image=encode_image(result, job.output_format),  # type: ignore[arg-type]
            width=result.width,
            height=result.height,
            pipeline_s=pipeline_s,
        )

    def release(self) -> None:
        self.pipe = None
        self._free_cached_memory()

    def _free_cached_memory(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
