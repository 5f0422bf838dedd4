"""Qwen3-VL (or any Qwen-VL-family judge) through transformers: the built-in judge backend.

Loaded with ``AutoModelForImageTextToText`` and ``AutoProcessor`` from a hub id, a local folder or
a built-in source (``tiny``, ``tiny-moe``, ``random-full``; see reward_service.models.qwen3_vl).
Batches are left-padded, so every prompt ends at the last position and the next token is the
answer's first.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
class _ExpectedGroup:
    """expected mode. Every prompt ends with an appended "1": one forward pass reads the first
    answer token's distribution at position -2 and the token after "1" at position -1.

    Questions that show the same images after the same system prompt share that prefix:
    ``prefixes`` holds each distinct prefix once and ``prefix_of`` says whose each question is;
    the questions' own text (``suffix_ids``, left-padded) then runs on the prefixes' KV cache.
    Without sharing, ``prefixes`` holds the whole prompts and ``prefix_of`` is None.
    """

    indices: list[int]
    prefixes: Any  # BatchFeature, on the CPU
    prefix_of: list[int] | None = None
    suffix_ids: Any = None  # (questions, suffix length)
    suffix_mask: Any = None

    @property
    def mode(self) -> Mode:
        return "expected"


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    size: int
    groups: list[_Group | _ExpectedGroup]
    shared_prefixes: int = 0  # questions that did not pay for their images (for metrics)


class TransformersJudgeBackend:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.source: ModelSource = parse_model_source(spec.model, BUILTIN_SOURCES)
        self.model: Any = None
        self.processor: Any = None
        self.device = "cpu"
        self.digit_ids: list[int] = []

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
        shared = 0
        for (mode, limit), indices in by_kind.items():
            questions = [batch[i] for i in indices]
            if mode == "expected":
                group = self._prepare_expected(indices, questions)
                if group.prefix_of is not None:
                    shared += len(indices) - len(set(group.prefix_of))
                groups.append(group)
            else:
                texts = [self._render(q) for q in questions]
                groups.append(_Group(indices, mode, limit, self._process(texts, questions)))
        return PreparedBatch(size=len(batch), groups=groups, shared_prefixes=shared)

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
            indices, prefixes, [row[key] for key in keys], suffix_ids, suffix_mask
        )

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
        """One pass per distinct prefix and one over the questions' own text (or a single pass
        when nothing is shared), reading the last two positions."""
        import torch

        prefixes = group.prefixes.to(self.device)
        if group.prefix_of is None:
            logits = self.model(**prefixes, use_cache=False, logits_to_keep=2).logits
            return score_token_logprobs(logits[:, -2], logits[:, -1], self.digit_ids)
        prefill = self.model(**prefixes, use_cache=True, logits_to_keep=1)
        rope_deltas = self.model.model.rope_deltas
        owner = torch.tensor(group.prefix_of, device=self.device)
        cache = prefill.past_key_values
        cache.reorder_cache(owner)  # one row per question, copied from its prefix
        prefix_mask = prefixes["attention_mask"][owner]
        suffix_mask = group.suffix_mask.to(self.device)
        positions = suffix_positions(prefix_mask, suffix_mask, rope_deltas[owner])
        logits = self.model(
            input_ids=group.suffix_ids.to(self.device),
            attention_mask=torch.cat([prefix_mask, suffix_mask], dim=1),
            position_ids=positions,
            past_key_values=cache,
            use_cache=False,
            logits_to_keep=2,
        ).logits
        return score_token_logprobs(logits[:, -2], logits[:, -1], self.digit_ids)

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
