"""Qwen3-VL (or any Qwen-VL-family judge) through transformers: the built-in judge backend.

Loaded with ``AutoModelForImageTextToText`` and ``AutoProcessor`` from a hub id, a local folder or
a built-in source (``tiny``, ``tiny-moe``, ``random-full``; see reward_service.models.qwen3_vl).
Batches are left-padded, so every prompt ends at the last position and the next token is the
answer's first.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reward_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    GeneratedText,
    JudgeQuestion,
    LoadedModel,
    Mode,
    QuestionOutput,
    ScoreTokenLogprobs,
)
from reward_service.backends.score_tokens import (
    digit_token_ids,
    score_token_logprobs,
    suffix_positions,
)
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

logger = logging.getLogger(__name__)

BUILTIN_SOURCES: dict[str, tuple[SourceKind, str]] = {
    "tiny": ("tiny", "dense"),
    "tiny-moe": ("tiny", "moe"),
    "random-full": ("random-full", "moe"),
}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on accelerators, float32 on the CPU."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


VISION_END = "<|vision_end|>"


@dataclass(frozen=True, slots=True)
class _Group:
    """generate mode: questions with one length limit, run as one batch."""

    indices: list[int]
    mode: Mode
    max_new_tokens: int
    inputs: Any  # the processor's BatchFeature, on the CPU


@dataclass(frozen=True, slots=True)
class _Bucket:
    """Prefixes of similar length, prefilled together, and the questions that continue them."""

    rows: list[int]  # the group's prefix rows
    width: int  # the longest of them, in tokens: the rows are cut to this from the left
    images: list[int]  # the rows' images, as positions in the group's image order
    questions: list[int]  # positions in the group
    owners: list[int]  # for each question, its prefix's position in ``rows``


@dataclass(frozen=True, slots=True)
class _ExpectedGroup:
    """expected mode. Every prompt ends with an appended "1": one forward pass reads the first
    answer token's distribution at position -2 and the token after "1" at position -1.

    Questions that show the same images after the same system prompt share that prefix:
    ``prefixes`` holds each distinct prefix once and ``prefix_of`` says whose each question is;
    the questions' own text (``suffix_ids``, left-padded) then runs on the prefixes' KV cache.
    Without sharing, ``prefixes`` holds the whole prompts and ``prefix_of`` is None.

    With sharing, where the model takes encoded images (``mm_encoder_outputs``), the vision
    encoder runs once over the group's distinct images: an image shown in several prefixes
    (viescore's edited image: once beside the source, once alone) is encoded once. ``prefixes``
    then carries the distinct images' pixels, ``image_grid`` their grids and ``image_of`` says
    which distinct image each of the prefixes' images is. And prefixes of very different lengths
    (two images against one) run as separate passes (``buckets``), so a short prefix is not
    padded to the long ones' length.
    """

    indices: list[int]
    prefixes: Any  # BatchFeature, on the CPU
    prefix_of: list[int] | None = None
    suffix_ids: Any = None  # (questions, suffix length)
    suffix_mask: Any = None
    image_of: list[int] | None = None
    image_grid: Any = None  # (distinct images, 3)
    buckets: list[_Bucket] = field(default_factory=list)

    @property
    def mode(self) -> Mode:
        return "expected"


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    size: int
    groups: list[_Group | _ExpectedGroup]
    shared_prefixes: int = 0  # questions that did not pay for their images (for metrics)
    reused_images: int = 0  # images of the prefixes encoded once for several prefixes


class TransformersJudgeBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.source: ModelSource = parse_model_source(spec.model, BUILTIN_SOURCES)
        self.model: Any = None
        self.processor: Any = None
        self.device = "cpu"
        self.digit_ids: list[int] = []
        self.reuse_images = bool(spec.options.get("reuse_image_encodings", True))
        self.split_prefixes = bool(spec.options.get("prefix_buckets", True))
        self.encode_images_apart = False  # set at load: the model takes mm_encoder_outputs

    # ----------------------------------------------------------------- loading

    def load(self, device: str) -> LoadedModel:
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from reward_service.models.qwen3_vl import Variant, build_model, ensure_tiny_folder

        transformers.utils.logging.disable_progress_bar()
        dtype = resolve_dtype(self.spec.dtype, device)
        attn = str(self.spec.options.get("attn_implementation", "sdpa"))
        source = self.source
        variant: Variant = "moe" if source.variant == "moe" else "dense"
        model: Any
        processor: Any
        started = time.perf_counter()
        if source.kind == "random-full":
            model, processor = build_model("full", "moe", device=device, dtype=dtype)
            model.set_attn_implementation(attn)
            revision: str | None = "random-init-seed-0"
        else:
            if source.kind == "tiny":
                folder = ensure_tiny_folder(Path(self.spec.cache_dir), variant)
                revision = folder_revision(folder, include_weights=True)
            elif source.kind == "local":
                folder = Path(source.name)
                revision = snapshot_revision(folder) or folder_revision(folder)
            else:
                folder = hub_snapshot(source.name, self.spec.revision)
                revision = snapshot_revision(folder) or self.spec.revision
            model = AutoModelForImageTextToText.from_pretrained(
                folder, dtype=dtype, attn_implementation=attn
            )
            model.to(device)
            processor = AutoProcessor.from_pretrained(folder)
        model.eval()
        processor.tokenizer.padding_side = "left"
        self.digit_ids = digit_token_ids(processor.tokenizer)
        self.model, self.processor, self.device = model, processor, device
        # Encoded images can be handed to forward() only by models that take mm_encoder_outputs.
        self.encode_images_apart = (
            "mm_encoder_outputs" in inspect.signature(model.forward).parameters
        )
        logger.info(
            "loaded judge %s (%s) on %s as %s in %.1fs",
            source.name,
            type(model).__name__,
            device,
            dtype,
            time.perf_counter() - started,
        )
        return LoadedModel(
            id=source.name,
            source=source.kind,
            revision=revision,
            model_class=type(model).__name__,
            dtype=str(dtype).removeprefix("torch."),
            meaningful=source.meaningful,
            details={"attn_implementation": attn},
        )

    def release(self) -> None:
        self.model = None
        self._free_cached_memory()

    # ----------------------------------------------------------------- preprocessing

    def prepare(self, batch: Sequence[JudgeQuestion]) -> PreparedBatch:
        """Group by (mode, length limit); template, process images and tokenize each group."""
        if self.processor is None:
            raise RuntimeError("prepare() before load()")
        by_kind: dict[tuple[Mode, int], list[int]] = {}
        for index, question in enumerate(batch):
            limit = question.max_new_tokens if question.mode == "generate" else 0
            by_kind.setdefault((question.mode, limit), []).append(index)
        groups: list[_Group | _ExpectedGroup] = []
        shared = reused = 0
        for (mode, limit), indices in by_kind.items():
            questions = [batch[i] for i in indices]
            if mode == "expected":
                group = self._prepare_expected(indices, questions)
                if group.prefix_of is not None:
                    shared += len(indices) - len(set(group.prefix_of))
                if group.image_of is not None:
                    reused += len(group.image_of) - len(set(group.image_of))
                groups.append(group)
            else:
                texts = [self._render(q) for q in questions]
                groups.append(_Group(indices, mode, limit, self._process(texts, questions)))
        return PreparedBatch(
            size=len(batch), groups=groups, shared_prefixes=shared, reused_images=reused
        )

    def _render(self, question: JudgeQuestion) -> str:
        text: str = self.processor.apply_chat_template(
            _messages(question), add_generation_prompt=True, tokenize=False
        )
        return text

    def _process(self, texts: list[str], questions: Sequence[JudgeQuestion]) -> Any:
        images = [image for q in questions for image in q.images]
        extra: dict[str, Any] = {}
        where = self.spec.options.get("preprocess_device", "auto")
        if images and self.device != "cpu" and where in ("auto", "model"):
            # Resize, normalise and patchify on the model's device: on the H100 this halves a
            # batch's preparation, and leaves the CPU to the model thread's kernel launches.
            extra["device"] = self.device
        return self.processor(
            text=texts,
            images=images or None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            **extra,
        )

    def _prepare_expected(self, indices: list[int], questions: list[JudgeQuestion]) -> Any:
        import torch

        one = "1"  # after the generation prompt's newline: Qwen splits digits into their own token
        texts = [self._render(q) for q in questions]
        cuts = [text.rfind(VISION_END) for text in texts]
        keys = [
            (text[: cut + len(VISION_END)], tuple(id(image) for image in q.images))
            for text, cut, q in zip(texts, cuts, questions, strict=True)
        ]
        distinct = list(dict.fromkeys(keys))
        if min(cuts) < 0 or len(distinct) == len(keys):
            inputs = self._process([text + one for text in texts], questions)
            self._check_ends_with_one(inputs["input_ids"])
            return _ExpectedGroup(indices, inputs)
        row = {key: i for i, key in enumerate(distinct)}
        owners = [keys.index(key) for key in distinct]
        prefixes = self._process([key[0] for key in distinct], [questions[i] for i in owners])
        image_of, image_grid = self._keep_distinct_images(prefixes, [questions[i] for i in owners])
        prefix_of = [row[key] for key in keys]
        buckets = self._buckets(
            prefixes, [len(key[1]) for key in distinct], prefix_of, image_of is not None
        )
        tokenizer = self.processor.tokenizer
        suffixes = tokenizer(
            [text[cut + len(VISION_END) :] + one for text, cut in zip(texts, cuts, strict=True)],
            add_special_tokens=False,
        )["input_ids"]
        width = max(len(ids) for ids in suffixes)
        pad = tokenizer.pad_token_id
        suffix_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in suffixes])
        suffix_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in suffixes])
        self._check_ends_with_one(suffix_ids)
        return _ExpectedGroup(
            indices,
            prefixes,
            prefix_of,
            suffix_ids,
            suffix_mask,
            image_of,
            image_grid,
            buckets,
        )

    def _buckets(
        self, prefixes: Any, images_per_row: list[int], prefix_of: list[int], apart: bool
    ) -> list[_Bucket]:
        """Rows by length, longest first; a row shorter than 0.8 of its bucket's longest starts
        a new bucket. One bucket when splitting is off or the images are not encoded apart."""
        lengths = prefixes["attention_mask"].sum(-1).tolist()
        order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
        split: list[list[int]] = []
        for r in order:
            together = not (self.split_prefixes and apart)
            if split and (together or lengths[r] >= 0.8 * lengths[split[-1][0]]):
                split[-1].append(r)
            else:
                split.append([r])
        starts = [sum(images_per_row[:r]) for r in range(len(images_per_row))]
        buckets = []
        for rows in split:
            rows.sort()
            position = {r: i for i, r in enumerate(rows)}
            questions = [q for q, r in enumerate(prefix_of) if r in position]
            buckets.append(
                _Bucket(
                    rows=rows,
                    width=int(max(lengths[r] for r in rows)),
                    images=[starts[r] + i for r in rows for i in range(images_per_row[r])],
                    questions=questions,
                    owners=[position[prefix_of[q]] for q in questions],
                )
            )
        return buckets

    def _keep_distinct_images(
        self, inputs: Any, questions: Sequence[JudgeQuestion]
    ) -> tuple[list[int] | None, Any]:
        """Drop the pixels of images already in the batch (the same image object), so each is
        encoded once; return which distinct image each image is, and the distinct ones' grids.
        (None, None) where the model cannot take encoded images: the pixels then stay as they
        are. With ``reuse_image_encodings`` off every image counts as distinct."""
        import torch

        images = [image for q in questions for image in q.images]
        if not self.encode_images_apart or not images:
            return None, None
        distinct: dict[int, int] = {}
        image_of = [
            distinct.setdefault(id(image) if self.reuse_images else i, len(distinct))
            for i, image in enumerate(images)
        ]
        if len(distinct) == len(images):
            return image_of, inputs["image_grid_thw"]
        grid = inputs["image_grid_thw"]
        patches = grid.prod(-1).tolist()
        starts = [sum(patches[:i]) for i in range(len(patches))]
        first = [image_of.index(j) for j in range(len(distinct))]
        pixels = inputs["pixel_values"]
        rows = torch.cat([torch.arange(starts[i], starts[i] + patches[i]) for i in first])
        inputs["pixel_values"] = pixels[rows.to(pixels.device)]
        return image_of, grid[first]

    def _check_ends_with_one(self, input_ids: Any) -> None:
        if not bool((input_ids[:, -1] == self.digit_ids[1]).all()):
            raise RuntimeError('the appended "1" did not tokenize as the digit token')

    # ----------------------------------------------------------------- inference

    def score(self, prepared: object) -> list[QuestionOutput]:
        import torch

        if self.model is None:
            raise RuntimeError("score() before load()")
        if not isinstance(prepared, PreparedBatch):
            raise TypeError(f"expected a PreparedBatch, not {type(prepared).__name__}")
        outputs: list[QuestionOutput | None] = [None] * prepared.size
        try:
            with torch.inference_mode():
                for group in prepared.groups:
                    results: Sequence[QuestionOutput] = (
                        self._expected(group)
                        if isinstance(group, _ExpectedGroup)
                        else self._generate(group.inputs.to(self.device), group.max_new_tokens)
                    )
                    for index, result in zip(group.indices, results, strict=True):
                        outputs[index] = result
        except torch.OutOfMemoryError:
            self._free_cached_memory()
            raise DeviceOutOfMemory(
                f"out of device memory on {self.device} for a batch of {prepared.size}"
            ) from None
        missing = [i for i, output in enumerate(outputs) if output is None]
        if missing:
            raise RuntimeError(f"no output for batch positions {missing}")
        return [output for output in outputs if output is not None]

    def _expected(self, group: _ExpectedGroup) -> list[ScoreTokenLogprobs]:
        """A single pass when nothing is shared; otherwise the vision encoder over the distinct
        images, then per bucket a pass over its prefixes and one over its questions' own text.
        Each reads the last two positions."""
        prefixes = group.prefixes.to(self.device)
        if group.prefix_of is None:
            logits = self.model(**prefixes, use_cache=False, logits_to_keep=2).logits
            return score_token_logprobs(logits[:, -2], logits[:, -1], self.digit_ids)
        inputs = dict(prefixes)
        encoded = None
        if group.image_of is not None:
            encoded = self._encode_images(inputs.pop("pixel_values"), group)
        outputs: dict[int, ScoreTokenLogprobs] = {}
        for bucket in group.buckets:
            results = self._expected_bucket(group, bucket, inputs, encoded)
            outputs.update(zip(bucket.questions, results, strict=True))
        return [outputs[question] for question in range(len(group.prefix_of))]

    def _expected_bucket(
        self, group: _ExpectedGroup, bucket: _Bucket, inputs: dict[str, Any], encoded: Any
    ) -> list[ScoreTokenLogprobs]:
        """Prefill the bucket's prefixes (cut to their own width), then its questions' text on
        copies of their prefixes' KV cache."""
        import torch

        rows = torch.tensor(bucket.rows, device=self.device)
        per_token = inputs["input_ids"].shape  # (prefixes, tokens): ids, mask, token types
        mine: dict[str, Any] = {}
        for key, value in inputs.items():
            if key == "image_grid_thw":
                mine[key] = value[bucket.images]
            elif key != "pixel_values" and getattr(value, "shape", None) == per_token:
                mine[key] = value[rows][:, per_token[1] - bucket.width :]
            else:
                mine[key] = value
        if encoded is not None:
            image_of = group.image_of or []
            mine["mm_encoder_outputs"] = {
                "image": _pick(encoded, [image_of[i] for i in bucket.images])
            }
        prefill = self.model(**mine, use_cache=True, logits_to_keep=1)
        owner = torch.tensor(bucket.owners, device=self.device)
        rope_deltas = self.model.model.rope_deltas[owner]
        cache = prefill.past_key_values
        cache.reorder_cache(owner)  # one row per question, copied from its prefix
        prefix_mask = mine["attention_mask"][owner]
        questions = torch.tensor(bucket.questions)
        suffix_mask = group.suffix_mask[questions].to(self.device)
        logits = self.model(
            input_ids=group.suffix_ids[questions].to(self.device),
            attention_mask=torch.cat([prefix_mask, suffix_mask], dim=1),
            position_ids=suffix_positions(prefix_mask, suffix_mask, rope_deltas),
            past_key_values=cache,
            use_cache=False,
            logits_to_keep=2,
        ).logits
        return score_token_logprobs(logits[:, -2], logits[:, -1], self.digit_ids)

    def _encode_images(self, pixels: Any, group: _ExpectedGroup) -> Any:
        """The vision encoder, once over the group's distinct images: what forward() takes as
        ``mm_encoder_outputs`` in place of pixels."""
        return self.model.get_image_features(
            pixels, group.image_grid.to(self.device), return_dict=True
        )

    def _generate(self, inputs: Any, max_new_tokens: int) -> list[GeneratedText]:
        from transformers import GenerationConfig

        base = self.model.generation_config
        # Pure greedy decoding. Sampling and penalty settings are given their neutral values
        # explicitly: generate() fills unset ones from the checkpoint's (sampling) defaults.
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            temperature=1.0,
            top_p=1.0,
            top_k=50,
            repetition_penalty=1.0,
            max_new_tokens=max_new_tokens,
            bos_token_id=base.bos_token_id,
            eos_token_id=base.eos_token_id,
            pad_token_id=base.pad_token_id
            if base.pad_token_id is not None
            else self.processor.tokenizer.pad_token_id,
        )
        sequences = self.model.generate(**inputs, generation_config=config)
        new = sequences[:, inputs["input_ids"].shape[1] :].tolist()
        eos = config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        results = []
        for tokens in new:
            length = next((i + 1 for i, t in enumerate(tokens) if t in stops), len(tokens))
            text = self.processor.tokenizer.decode(tokens[:length], skip_special_tokens=True)
            results.append(GeneratedText(text=text.strip(), new_tokens=length))
        return results

    def _free_cached_memory(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _pick(encoded: Any, images: list[int]) -> Any:
    """The vision encoder's output for the given images (indices into what it encoded), in that
    order, repeats allowed."""
    fields = dict(encoded)
    fields["pooler_output"] = tuple(encoded.pooler_output[i] for i in images)
    deepstack = getattr(encoded, "deepstack_features", None)
    if deepstack is not None:  # Qwen3-VL feeds these into early decoder layers
        fields["deepstack_features"] = [tuple(layer[i] for i in images) for layer in deepstack]
    return type(encoded)(**fields)


def _messages(question: JudgeQuestion) -> list[dict[str, Any]]:
    content = [
        {"type": "text", "text": part} if isinstance(part, str) else {"type": "image"}
        for part in question.content
    ]
    messages: list[dict[str, Any]] = []
    if question.system:
        messages.append({"role": "system", "content": question.system})
    messages.append({"role": "user", "content": content})
    return messages
