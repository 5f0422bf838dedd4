"""Every hosted family through diffusers: the one real editing backend.

Runs inside a worker process only. The pipeline class comes from the model folder
(``DiffusionPipeline.from_pretrained``) and chooses the family (``editor_service.families``:
Qwen-Image-Edit and Edit Plus, FLUX.1 Kontext, LongCat-Image-Edit), which says what the pipeline
takes; nothing here branches on a family by name. Built-in sources (``tiny``, ``tiny-kontext``,
``random-full``...) are built by the family's module of tiny_models, imported only for them.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from editor_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EditJob,
    EditOutput,
    InvalidJob,
    JobCancelled,
    LoadedModel,
    RGBImage,
)
from editor_service.backends.option_checks import check_options
from editor_service.backends.speed_modes import (
    QWEN_FP8_LAYERS,
    UnsupportedOption,
    check_fp8_device,
    enable_step_schedule,
    quantize_fp8,
)
from editor_service.families.base import EditorFamily, InvalidParameter
from editor_service.families.options import option_refusal, unhonoured_options
from editor_service.families.registry import (
    builtin_sources,
    family_of_builtin,
    family_of_model,
    family_of_pipeline,
)
from editor_service.families.wire import input_limit_message, no_inpainting_message
from service_kit.models.compiling import compile_by_default
from service_kit.models.dtypes import resolve_dtype
from service_kit.models.loading import RANDOM_REVISION, model_folder
from service_kit.models.sources import ModelSource, SourceKind, parse_model_source
from service_kit.text_safety import control_token_in

logger = logging.getLogger(__name__)

GREY = (120, 140, 160)  # the warm-up edits' source colour
# Every family's built-in names (tiny, tiny-kontext, random-full...): name -> (kind, variant).
BUILTIN_SOURCES: dict[str, tuple[SourceKind, str]] = builtin_sources()


def apply_tuning(
    pipe: Any, options: dict[str, Any], device: str, *, fp8_layers: str = QWEN_FP8_LAYERS
) -> dict[str, Any]:
    """LoRA, FP8 (the family's layers), Qwen-Image's fused joint attention (Qwen-Image-Edit
    only), attention backend, step cache and regional compilation, in that order.

    Returns what was applied, for the model's provenance: results made with any of these are a
    different configuration from the plain model and are labelled as such. An option the device
    cannot run (FP8 on the CPU) raises UnsupportedOption instead of being skipped.
    """
    applied: dict[str, Any] = {}
    if options.get("lora"):
        pipe.load_lora_weights(
            options["lora"], weight_name=options.get("lora_weight_name"), adapter_name="editbench"
        )
        scale = float(options.get("lora_scale", 1.0))
        pipe.fuse_lora(lora_scale=scale, adapter_names=["editbench"])
        pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
        applied.update(lora=str(options["lora"]), lora_scale=scale)
    if options.get("transformer_fp8"):
        quantize_fp8(pipe.transformer, str(options["transformer_fp8"]), device, fp8_layers)
        applied["transformer_fp8"] = str(options["transformer_fp8"])
    from editor_service.backends import qwen_kernels

    # The same function as diffusers' processor, rounding apart: not a new configuration, so
    # not part of what was applied (the service's options still say it). The backend refused it
    # for another family before loading; this is a defence.
    if options.get("fused_attention") and not qwen_kernels.install(pipe.transformer):
        raise UnsupportedOption(
            f"fused_attention is for QwenImageTransformer2DModel, not "
            f"{type(pipe.transformer).__name__}"
        )
    if options.get("attention_backend"):
        pipe.transformer.set_attention_backend(options["attention_backend"])
        applied["attention_backend"] = options["attention_backend"]
    if options.get("step_cache") and options.get("step_cache_interval"):
        raise UnsupportedOption(
            "step_cache and step_cache_interval are two step caches: choose one"
        )
    if options.get("step_cache"):
        from diffusers import FirstBlockCacheConfig

        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=float(options["step_cache"])))
        applied["step_cache"] = float(options["step_cache"])
    if options.get("step_cache_interval"):
        interval = int(options["step_cache_interval"])
        warmup = int(options.get("step_cache_warmup") or 3)
        enable_step_schedule(pipe.transformer, interval, warmup)
        applied.update(step_cache_interval=interval, step_cache_warmup=warmup)
    if compile_wanted(options, device):
        if device == "cpu":
            logger.warning("compile is for GPUs; running eagerly on the CPU")
        else:
            # A cache hook wraps each block's forward in code torch.compile cannot trace into
            # one graph, so the blocks compile with graph breaks there.
            cached = bool(options.get("step_cache") or options.get("step_cache_interval"))
            pipe.transformer.compile_repeated_blocks(fullgraph=not cached)
            applied["compile"] = "regional"
    return applied


def pipeline_class_of(folder: Path) -> str:
    """The pipeline class a diffusers model folder names (model_index.json's ``_class_name``);
    a folder that names none is refused (UnsupportedOption: the model setting is wrong)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = None
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise UnsupportedOption(
            f"model {folder} is not a diffusers pipeline folder (no model_index.json naming its "
            "_class_name): set EDITOR_MODEL to a model of a hosted family"
        )
    return str(index["_class_name"])


def compile_wanted(options: dict[str, Any], device: str) -> bool:
    """The compile option: as set, or by default on CUDA devices with a C compiler for Triton
    (service_kit.models.compiling) and not elsewhere."""
    chosen = options.get("compile")
    return compile_by_default(device) if chosen is None else bool(chosen)


class DiffusersEditBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.source: ModelSource = parse_model_source(spec.model, BUILTIN_SOURCES)
        self.pipe: Any = None  # a diffusers pipeline (dynamically typed), once loaded
        self.inpaint_pipe: Any = None  # the same components as an inpainting pipeline, if any
        self.family: EditorFamily | None = None  # chosen by the loaded pipeline's class
        self.device = "cpu"

    def load(self, device: str) -> LoadedModel:
        import diffusers
        import torch
        import transformers
        from diffusers import DiffusionPipeline

        if self.spec.options.get("deterministic"):
            # Before any kernel runs: each job is one pass of fixed shapes seeded by its own
            # generator, so with these kernels it repeats bit for bit on any worker.
            from service_kit.models.determinism import use_deterministic_torch

            use_deterministic_torch()
        # Progress bars are noise in a service log; the worker logs each job instead.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        check_options(self.spec.options)  # a value the backend cannot take: refused, final
        if self.spec.options.get("transformer_fp8"):  # before the weights, not after them
            cuda = device.startswith("cuda")
            check_fp8_device(device, torch.cuda.get_device_capability(device) if cuda else None)
        dtype = resolve_dtype(self.spec.dtype, device)
        source = self.source
        started = time.perf_counter()
        named = family_of_model(source.name)  # a built-in or a known hub id: before any build
        if named is not None:
            self._refuse_unhonoured(named)
        if source.kind == "random-full":
            builder = importlib.import_module(family_of_builtin(str(source.variant)).builder)
            pipe: Any = builder.build_pipeline("full", source.variant, device=device, dtype=dtype)
            revision: str | None = RANDOM_REVISION
        else:

            def build_tiny() -> Path:
                builder = importlib.import_module(family_of_builtin(str(source.variant)).builder)
                folder: Path = builder.ensure_tiny_folder(Path(self.spec.cache_dir), source.variant)
                return folder

            folder, revision = model_folder(source, self.spec.revision, build_tiny)
            # Before the weights: the folder's pipeline class names the family.
            self._refuse_unhonoured(family_of_pipeline(pipeline_class_of(folder)))
            pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype)
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        pipeline_class = type(pipe).__name__
        family = self.family = family_of_pipeline(pipeline_class)
        self.pipe = pipe
        self.device = device
        inpaint_class = family.inpaint_pipelines.get(pipeline_class)
        if inpaint_class is not None:
            # Shares every component (no extra memory): masks work on these checkpoints. Built
            # from the components, not with from_pipe: from_pipe casts the shared modules to its
            # own dtype argument (float32 by default), which turned a bf16 model into a float32
            # one (and made the compiled blocks recompile for it).
            components: dict[str, Any] = pipe.components
            self.inpaint_pipe = getattr(diffusers, inpaint_class)(**components)
            self.inpaint_pipe.set_progress_bar_config(disable=True)
        applied = apply_tuning(pipe, self.spec.options, device, fp8_layers=family.fp8_layers)
        if self.spec.options.get("park_text_encoder"):
            # Same weights, same kernels, same images: not part of what was applied.
            from editor_service.backends.parking import park_text_encoder

            park_text_encoder(pipe, device, family.text_encoders)
        if self.spec.options.get("deterministic"):
            applied["deterministic"] = True
        logger.info(
            "loaded %s (%s) on %s as %s in %.1fs with %s",
            source.name,
            type(pipe).__name__,
            device,
            dtype,
            time.perf_counter() - started,
            applied or "no tuning",
        )
        if applied.get("compile"):
            self._warm_up()  # the last thing load does: nothing may change the model after it
        return LoadedModel.of(
            source,
            revision,
            pipe,
            dtype,
            pipe.tokenizer,
            details=applied,
            max_images=family.pipeline_classes[pipeline_class],
            inpainting=self.inpaint_pipe is not None,
            family=family.name,
        )

    def _refuse_unhonoured(self, family: EditorFamily) -> None:
        """UnsupportedOption for an option set that ``family`` cannot honour (fused_attention
        on FLUX.1 Kontext): refused, never silently ignored."""
        for option in unhonoured_options(family, self.spec.options):
            raise UnsupportedOption(option_refusal(option, family, self.source.name))

    def _warm_up(self) -> None:
        """Compile now, not on a user's request: two edits that differ in prompt length and
        output size (or the source's aspect, for a family that takes no size), so the compiled
        blocks accept varying shapes without recompiling."""
        from PIL import Image

        started = time.perf_counter()
        steps = 2
        if self.spec.options.get("step_cache_interval"):
            # Past the cache's warm-up into its extrapolated steps, so those compile now too.
            warmup = int(self.spec.options.get("step_cache_warmup") or 3)
            steps = warmup + int(self.spec.options["step_cache_interval"]) + 1
        family = self.family
        assert family is not None
        cfg = 4.0 if family.parameter("true_cfg_scale") else None
        for i, (instruction, side) in enumerate(
            [("make it red", 1024), ("replace the background with a quiet beach at sunset", 768)]
        ):
            warm = EditJob(
                job_id=f"0-warmup{i}",
                # A family that takes no output size makes the source's aspect: the second
                # source has another, so its image sequence length varies as well.
                image=RGBImage.from_pil(
                    Image.new("RGB", (512, 512 if family.takes_size or i == 0 else 384), GREY)
                ),
                instruction=instruction,
                negative_prompt=" ",
                num_inference_steps=steps,
                true_cfg_scale=cfg,
                seed=0,
                width=side if family.takes_size else None,
                height=1024 if family.takes_size else None,
            )
            self.edit(warm, lambda: False)
        logger.info("compiled and warmed up in %.1fs", time.perf_counter() - started)

    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        """One edit with the pipeline; see EditBackend.edit."""
        import torch

        if self.pipe is None:
            raise RuntimeError("edit() before load()")
        family = self.family
        assert family is not None
        takes = family.pipeline_classes[type(self.pipe).__name__]
        if 1 + len(job.more_images) > takes:  # the API process checks once a model is known
            given = 1 + len(job.more_images)
            raise InvalidJob(
                input_limit_message(self.source.name, family, takes, given), param="image"
            )
        image: Any = job.image.to_pil()
        if job.more_images:
            image = [image, *(extra.to_pil() for extra in job.more_images)]
            # What the pipeline is given, per job (a multi-input edit is rare and worth a line).
            logger.info(
                "job %s: %d input images to %s: %s",
                job.job_id,
                len(image),
                type(self.pipe).__name__,
                ", ".join(f"{i.width}x{i.height}" for i in image),
            )
        pipe = self.pipe
        if job.mask is not None:
            if self.inpaint_pipe is None:
                raise InvalidJob(
                    no_inpainting_message(self.source.name, family, type(self.pipe).__name__),
                    param="mask",
                )
            pipe = self.inpaint_pipe

        def on_step_end(
            pipe: Any, _step: int, _timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            if should_stop():
                pipe._interrupt = True
            return callback_kwargs

        try:
            settings = family.resolve(
                num_inference_steps=job.num_inference_steps,
                negative_prompt=job.negative_prompt,
                parameters=job.family_parameters(),
                width=job.width,
                height=job.height,
            )
        except InvalidParameter as exc:
            raise InvalidJob(str(exc), param=exc.param) from None
        kwargs: dict[str, Any] = family.call(settings)
        self._check_prompt_length(job.instruction_param, job.instruction)
        if kwargs.get("negative_prompt"):
            self._check_prompt_length("negative_prompt", kwargs["negative_prompt"])
        kwargs.update(
            image=image,
            prompt=job.instruction,
            generator=torch.Generator(device=self.device).manual_seed(job.seed),
        )
        if family.stop_signal == "callback":
            kwargs["callback_on_step_end"] = on_step_end
        if job.mask is not None:
            # The whole masked region is made anew (OpenAI's mask semantics), the rest kept.
            kwargs.update(mask_image=job.mask.to_pil().convert("L"), strength=1.0)

        if getattr(self.pipe.transformer, "is_cache_enabled", False):
            # A step cache counts steps; an edit that stopped early (out of memory) must not
            # leave its count to the next one. The pipeline resets it only when it finishes.
            self.pipe.maybe_free_model_hooks()
        started = time.perf_counter()
        try:
            with torch.inference_mode(), self._stop_hook(pipe, family, should_stop):
                result = pipe(**kwargs).images[0]
        except torch.OutOfMemoryError:
            self._free_cached_memory()
            raise DeviceOutOfMemory(
                f"out of device memory on {self.device} for a "
                f"{kwargs.get('width', 'default')}x{kwargs.get('height', 'default')} edit"
            ) from None
        pipeline_s = time.perf_counter() - started
        if getattr(pipe, "_interrupt", False):
            raise JobCancelled(job.job_id)
        return EditOutput(
            image=RGBImage.from_pil(result),
            pipeline_s=pipeline_s,
            num_inference_steps=settings.num_inference_steps,
            parameters=settings.parameters,
            device_memory_peak_bytes=(
                torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else None
            ),
        )

    @staticmethod
    @contextlib.contextmanager
    def _stop_hook(
        pipe: Any, family: EditorFamily, should_stop: Callable[[], bool]
    ) -> Iterator[None]:
        """For a family whose pipeline takes no step callback: after each transformer call, set
        the pipeline's interrupt flag if the job is to stop (the pipeline then skips the steps
        left, as with callback_on_step_end). The hook lives for this one edit."""
        if family.stop_signal != "transformer_hook":
            yield
            return

        def after_forward(*_: Any) -> None:
            if should_stop():
                pipe._interrupt = True

        handle = pipe.transformer.register_forward_hook(after_forward)
        try:
            yield
        finally:
            handle.remove()

    def _check_prompt_length(self, param: str, text: str) -> None:
        """Refuse a prompt longer than the model reads: the transformer's text positions are
        finite, and past them the pipeline fails inside the model instead of saying why."""
        pipe: Any = self.pipe
        family = self.family
        assert family is not None
        tokenizer = getattr(pipe, family.prompt_tokenizer)
        # The route refused these already; this is the tokenizer's own word, as a defence.
        control = control_token_in(tokenizer, text)
        if control is not None:
            raise InvalidJob(
                f"{param} contains {control!r}, one of the model's control tokens; "
                "user text may not contain them",
                param=param,
            )
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokens > family.prompt_token_limit:
            raise InvalidJob(
                f"{param} is {tokens} tokens long; the model reads at most "
                f"{family.prompt_token_limit}",
                param=param,
            )

    def release(self) -> None:
        self.pipe = self.inpaint_pipe = None
        self._free_cached_memory()

    def _free_cached_memory(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
