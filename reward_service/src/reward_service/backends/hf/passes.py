"""Running a planned batch's forward passes on the model (the worker's model thread only).

Expected mode reads the last two positions of each prompt (see backends.score_tokens); where
questions share a prefix, the vision encoder runs once over the distinct images, then per bucket
one pass prefills the prefixes and one runs the questions' own text on their KV cache: folded,
one row per prefix with its questions side by side (``prefix_passes`` ``folded``, backends.hf.
folding), or one row per question on a copy of its prefix's cache (``copied``).
Generate mode decodes greedily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reward_service.backends.base import GeneratedText, QuestionOutput, ScoreTokenLogprobs
from reward_service.backends.hf.folding import PrefixPasses, fold, read_folded
from reward_service.backends.hf.planning import (
    ONE,
    Bucket,
    ExpectedGroup,
    GenerateGroup,
    PreparedBatch,
)
from reward_service.backends.score_tokens import score_token_logprobs, suffix_positions


class Passes:
    def __init__(
        self,
        model: Any,
        processor: Any,
        device: str,
        digit_ids: list[int],
        prefix_passes: PrefixPasses = "folded",
    ) -> None:
        self.model = model
        self.prefix_passes = prefix_passes
        self.processor = processor
        self.device = device
        self.digit_ids = digit_ids

    def run(self, prepared: PreparedBatch) -> list[QuestionOutput]:
        """One output per question, in batch order; the caller holds inference_mode."""
        outputs: list[QuestionOutput | None] = [None] * prepared.size
        for group in prepared.groups:
            if isinstance(group, ExpectedGroup):
                for index, merged in _by_question(group, self.expected(group)).items():
                    outputs[index] = merged
                continue
            results: Sequence[QuestionOutput] = self.generate(group)
            for index, result in zip(group.indices, results, strict=True):
                outputs[index] = result
        missing = [i for i, output in enumerate(outputs) if output is None]
        if missing:
            raise RuntimeError(f"no output for batch positions {missing}")
        return [output for output in outputs if output is not None]

    def expected(self, group: ExpectedGroup) -> list[ScoreTokenLogprobs]:
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
        self, group: ExpectedGroup, bucket: Bucket, inputs: dict[str, Any], encoded: Any
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
        if self.prefix_passes == "folded":
            return self._folded_questions(group, bucket, mine["attention_mask"], prefill)
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

    def _folded_questions(
        self, group: ExpectedGroup, bucket: Bucket, prefix_mask: Any, prefill: Any
    ) -> list[ScoreTokenLogprobs]:
        """The bucket's questions on their prefixes' cache as it is: one row per prefix, its
        questions side by side (backends.hf.folding)."""
        import torch

        questions = torch.tensor(bucket.questions)
        eager = getattr(self.model.config, "_attn_implementation", "sdpa") == "eager"
        folded = fold(
            group.suffix_ids[questions],
            group.suffix_mask[questions],
            bucket.owners,
            prefix_mask,
            self.model.model.rope_deltas,
            int(self.processor.tokenizer.pad_token_id),
            eager_dtype=self.model.dtype if eager else None,
        )
        logits = self.model(
            input_ids=folded.input_ids,
            attention_mask=folded.attention_mask,
            position_ids=folded.position_ids,
            past_key_values=prefill.past_key_values,
            use_cache=False,
            logits_to_keep=folded.logits_to_keep,
        ).logits
        first, after = read_folded(logits, folded)
        return score_token_logprobs(first, after, self.digit_ids)

    def _encode_images(self, pixels: Any, group: ExpectedGroup) -> Any:
        """The vision encoder, once over the group's distinct images: what forward() takes as
        ``mm_encoder_outputs`` in place of pixels."""
        return self.model.get_image_features(
            pixels, group.image_grid.to(self.device), return_dict=True
        )

    def generate(self, group: GenerateGroup) -> list[GeneratedText]:
        from transformers import GenerationConfig

        inputs = group.inputs.to(self.device)
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
            max_new_tokens=group.max_new_tokens,
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


def _by_question(
    group: ExpectedGroup, rows: Sequence[ScoreTokenLogprobs]
) -> dict[int, ScoreTokenLogprobs]:
    """One output per question from its rows (one per lead digit): the first answer token's
    distribution from its first row, the distribution after each lead from that lead's row."""
    leads = group.leads or [ONE] * len(rows)
    mine: dict[int, list[tuple[int, ScoreTokenLogprobs]]] = {}
    for index, lead, row in zip(group.indices, leads, rows, strict=True):
        mine.setdefault(index, []).append((lead, row))
    merged = {}
    for index, read in mine.items():
        after = {lead: row.after_one for lead, row in read}
        first = read[0][1].first
        merged[index] = ScoreTokenLogprobs(
            first=first,
            after_one=after.pop(ONE, read[0][1].after_one),
            after_other=tuple(sorted(after.items())),
        )
    return merged


def _pick(encoded: Any, images: list[int]) -> Any:
    """The vision encoder's output for the given images (indices into what it encoded), in that
    order, repeats allowed."""
    fields = dict(encoded)
    fields["pooler_output"] = tuple(encoded.pooler_output[i] for i in images)
    deepstack = getattr(encoded, "deepstack_features", None)
    if deepstack is not None:  # Qwen3-VL feeds these into early decoder layers
        fields["deepstack_features"] = [tuple(layer[i] for i in images) for layer in deepstack]
    return type(encoded)(**fields)
