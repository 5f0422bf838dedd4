"""Qwen3-VL (or any Qwen-VL-family judge) through transformers: the built-in judge backend.

The jobs live in backends.hf: ``loading`` (model and processor), ``planning`` (templates, images,
tokens and shared prefixes; the preparing thread) and ``passes`` (the forward passes; the model
thread), with ``compiled_layers`` (the decoder layers and vision blocks written for torch.compile)
and ``warm_up`` (their compile at load). Options (``REWARD_BACKEND_OPTIONS``):
``attn_implementation``, ``reuse_image_encodings``, ``prefix_buckets``, ``preprocess_device``,
``compile`` (regional torch.compile; default on CUDA devices outside deterministic mode),
``vision_attention`` (``grouped`` by default on CUDA: images of one length in one attention call;
``per_image``), ``patch_embed`` (``linear`` by default on CUDA; ``conv``), ``compile_backend``
(``inductor``) and ``prepare_stream`` (``side``, the default: a batch is prepared on a CUDA stream
of its own, not queued behind the model's work; ``default``; see ``hf.prepare_stream``),
``prefix_passes`` (``folded``, the default: the questions of one prefix run as one row on its
KV cache as it is; ``copied``: one row per question on a copy of it; see ``hf.folding``),
``prefix_common_text`` (on by default: the text a prefix's questions all begin with joins the
prefix, so it runs once; see ``hf.planning``). A
compile that fails at load leaves the layers running eagerly (logged, and named in the model's
options).

Deterministic mode (``REWARD_DETERMINISTIC``, the spec's ``deterministic``): every item's forward
passes (vision encoder included) run on their own, with shapes that depend on that item alone,
and torch uses deterministic kernels. A question's answer is then bit-identical whatever batch,
order or partners it was scored with, on the same GPU model and software; the price is the
throughput that batching items together would have bought (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from PIL.Image import Image

from reward_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    InvalidOption,
    JudgeItem,
    LoadedModel,
    QuestionOutput,
    option_flag,
)
from reward_service.backends.hf.compiled_layers import InstalledLayers, install, layer_options
from reward_service.backends.hf.folding import prefix_passes_option
from reward_service.backends.hf.loading import BUILTIN_SOURCES, load_judge
from reward_service.backends.hf.passes import Passes
from reward_service.backends.hf.planning import Planner, PlanOptions, PreparedBatch
from reward_service.backends.hf.prepare_stream import PrepareStreams, stream_choice
from reward_service.backends.hf.warm_up import warm_up
from reward_service.backends.score_tokens import digit_token_ids
from service_kit.models.oom import free_device_memory
from service_kit.models.sources import ModelSource, parse_model_source

__all__ = ["BUILTIN_SOURCES", "PreparedBatch", "TransformersJudgeBackend"]

logger = logging.getLogger(__name__)


def preprocess_device_option(options: dict[str, Any]) -> str:
    """``preprocess_device``: ``auto`` (or ``model``: the model's device) or ``cpu``."""
    value = options.get("preprocess_device", "auto")
    if value not in ("auto", "model", "cpu"):
        raise InvalidOption(
            f"preprocess_device must be 'auto' (or its other name 'model') or 'cpu', not {value!r}"
        )
    return str(value)


class TransformersJudgeBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.source: ModelSource = parse_model_source(spec.model, BUILTIN_SOURCES)
        self.deterministic = spec.deterministic
        self.model: Any = None
        self.processor: Any = None
        self.device = "cpu"
        self.digit_ids: list[int] = []
        self._planner: Planner | None = None
        self._passes: Passes | None = None
        self._streams = PrepareStreams("cpu", "default")
        self._layers: InstalledLayers | None = None

    def load(self, device: str) -> LoadedModel:
        if self.deterministic:
            from service_kit.models.determinism import use_deterministic_torch

            use_deterministic_torch()
        # Every option is read (an invalid one refused) before the weights load.
        options = self.spec.options
        streams = PrepareStreams(device, stream_choice(options))
        chosen = layer_options(options, device, self.deterministic)
        plan = PlanOptions(
            reuse_images=option_flag(options, "reuse_image_encodings", True),
            split_prefixes=option_flag(options, "prefix_buckets", True),
            preprocess_on_device=preprocess_device_option(options) != "cpu",
            isolate_items=self.deterministic,
            common_text=option_flag(options, "prefix_common_text", True),
        )
        loaded = load_judge(self.spec, self.source, device)
        self.model, self.processor, self.device = loaded.model, loaded.processor, device
        self.digit_ids = digit_token_ids(self.processor.tokenizer)
        # Encoded images can be handed to forward() only by models that take them.
        plan = replace(
            plan,
            encode_images_apart="mm_encoder_outputs"
            in inspect.signature(self.model.forward).parameters,
        )
        self._planner = Planner(self.processor, device, self.digit_ids, plan)
        passes = prefix_passes_option(options, str(loaded.info.details["attn_implementation"]))
        self._passes = Passes(self.model, self.processor, device, self.digit_ids, passes)
        self._streams = streams
        layers = install(self.model, chosen, self.deterministic)
        if layers.compiled:
            try:
                warm_up(self)
            except Exception as error:  # a judge that runs eagerly beats one that cannot start
                logger.exception("compiling the judge's layers failed; they run eagerly")
                layers.run_eagerly(type(error).__name__)
                free_device_memory()
            layers.warmed_up()
        self._layers = layers
        details = {
            **loaded.info.details,
            **layers.describe(),
            "prefix_passes": passes,
            "prefix_common_text": "on" if plan.common_text else "off",
        }
        return replace(loaded.info, deterministic=self.deterministic, details=details)

    def release(self) -> None:
        self.model = None
        self._passes = None
        self._layers = None
        free_device_memory()

    @property
    def planner(self) -> Planner:
        if self._planner is None:
            raise RuntimeError("prepare() before load()")
        return self._planner

    def prepare(self, items: Sequence[JudgeItem[Image]]) -> PreparedBatch:
        """Templates, images and tokens for the batch's passes (never touches the model)."""
        with self._streams.preparing():
            return self.planner.plan(items)

    def score(self, prepared: object) -> list[QuestionOutput]:
        import torch

        if self._passes is None:
            raise RuntimeError("score() before load()")
        if not isinstance(prepared, PreparedBatch):
            raise TypeError(f"expected a PreparedBatch, not {type(prepared).__name__}")
        self._streams.hand_over(prepared)
        try:
            with torch.inference_mode():
                outputs = self._passes.run(prepared)
            if self._layers is not None and (new := self._layers.new_graphs()):
                logger.warning(
                    "compiled %d new graph(s) for a batch of %d after the warm-up",
                    new,
                    prepared.size,
                )
            return outputs
        except torch.OutOfMemoryError:
            free_device_memory()
            raise DeviceOutOfMemory(
                f"out of device memory on {self.device} for a batch of {prepared.size}"
            ) from None
