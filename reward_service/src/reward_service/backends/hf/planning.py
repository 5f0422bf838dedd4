"""Planning a batch's forward passes: chat templates, image processing, tokens and shared prefixes.

Runs on the worker's preparing thread and never touches the model. Questions are grouped by how
their answers are read (expected mode; generate mode with one length limit). In expected mode,
questions of one item that show the same images after the same system prompt share that prefix:
it is prefilled once and each question's own text continues it. An image is known by its item
and its index there (never by object identity).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL.Image import Image

from reward_service.backends.base import JudgeItem, JudgeQuestion, Mode

VISION_END = "<|vision_end|>"
# expected mode appends a lead digit after the generation prompt ("1" where the scale needs none):
# Qwen splits digits into their own token.
ONE = 1

ImageKey = tuple[int, int]  # (the item's position in the batch, the image's index in the item)


@dataclass(frozen=True, slots=True)
class Ask:
    """A question with its images, and their keys."""

    question: JudgeQuestion
    images: list[Image]
    keys: tuple[ImageKey, ...]


def asks_of(items: Sequence[JudgeItem[Image]]) -> list[Ask]:
    return [
        Ask(q, item.images_of(q), tuple((n, i) for i in q.image_indices))
        for n, item in enumerate(items)
        for q in item.questions
    ]


@dataclass(frozen=True, slots=True)
class GenerateGroup:
    """generate mode: questions with one length limit, run as one batch."""

    indices: list[int]
    max_new_tokens: int
    inputs: Any  # the processor's BatchFeature

    @property
    def mode(self) -> Mode:
        return "generate"


@dataclass(frozen=True, slots=True)
class Bucket:
    """Prefixes of similar length, prefilled together, and the questions that continue them."""

    rows: list[int]  # the group's prefix rows
    width: int  # the longest of them, in tokens: the rows are cut to this from the left
    images: list[int]  # the rows' images, as positions in the group's image order
    questions: list[int]  # positions in the group
    owners: list[int]  # for each question, its prefix's position in ``rows``


@dataclass(frozen=True, slots=True)
class ExpectedGroup:
    """expected mode. Every prompt ends with an appended lead digit: one forward pass reads the
    first answer token's distribution at position -2 and the token after the lead at position
    -1. A question whose scale has several leads (0..25: "1" and "2") runs once per lead: its
    rows repeat its position in ``indices``, with their digit in ``leads``.

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
    prefixes: Any  # BatchFeature
    leads: list[int] = field(default_factory=list)  # per row; empty: every row's lead is "1"
    prefix_of: list[int] | None = None
    suffix_ids: Any = None  # (questions, suffix length)
    suffix_mask: Any = None
    image_of: list[int] | None = None
    image_grid: Any = None  # (distinct images, 3)
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def mode(self) -> Mode:
        return "expected"


Group = GenerateGroup | ExpectedGroup


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    size: int
    groups: list[Group]
    shared_prefixes: int = 0  # questions that did not pay for their images (for metrics)
    reused_images: int = 0  # images of the prefixes encoded once for several prefixes


@dataclass(frozen=True, slots=True)
class PlanOptions:
    reuse_images: bool = True  # an image shown in several prefixes is encoded once
    split_prefixes: bool = True  # prefixes of very different lengths run as separate passes
    encode_images_apart: bool = False  # the model takes mm_encoder_outputs
    preprocess_on_device: bool = True  # image processing on the model's device (not the CPU)
    isolate_items: bool = False  # deterministic mode: every item's passes run on their own
    common_text: bool = True  # the text a prefix's questions all begin with joins the prefix


class Planner:
    def __init__(
        self, processor: Any, device: str, digit_ids: list[int], options: PlanOptions
    ) -> None:
        self.processor = processor
        self.device = device
        self.digit_ids = digit_ids
        self.options = options

    def plan(self, items: Sequence[JudgeItem[Image]]) -> PreparedBatch:
        """The batch's passes. With ``isolate_items`` each item is planned alone, so its passes
        have the same shapes whatever else is in the batch."""
        if not self.options.isolate_items:
            return self._plan(asks_of(items))
        groups: list[Group] = []
        shared = reused = offset = 0
        for item in items:
            part = self._plan(asks_of([item]))
            groups += [_shifted(group, offset) for group in part.groups]
            shared += part.shared_prefixes
            reused += part.reused_images
            offset += part.size
        return PreparedBatch(offset, groups, shared, reused)

    def _plan(self, asks: list[Ask]) -> PreparedBatch:
        """Group by (mode, length limit); template, process images and tokenize each group."""
        by_kind: dict[tuple[Mode, int], list[int]] = {}
        for index, ask in enumerate(asks):
            q = ask.question
            limit = q.max_new_tokens if q.mode == "generate" else 0
            by_kind.setdefault((q.mode, limit), []).append(index)
        groups: list[Group] = []
        shared = reused = 0
        for (mode, limit), indices in by_kind.items():
            mine = [asks[i] for i in indices]
            if mode == "expected":
                rows = [(i, lead) for i in indices for lead in asks[i].question.leads or (ONE,)]
                group = self._expected(
                    [i for i, _ in rows], [asks[i] for i, _ in rows], [lead for _, lead in rows]
                )
                if group.prefix_of is not None:
                    shared += len(indices) - len(set(group.prefix_of))
                if group.image_of is not None:
                    reused += len(group.image_of) - len(set(group.image_of))
                groups.append(group)
            else:
                texts = [self.render(a.question) for a in mine]
                groups.append(GenerateGroup(indices, limit, self._process(texts, mine)))
        return PreparedBatch(len(asks), groups, shared, reused)

    def render(self, question: JudgeQuestion) -> str:
        text: str = self.processor.apply_chat_template(
            messages(question), add_generation_prompt=True, tokenize=False
        )
        return text

    def _process(self, texts: list[str], asks: Sequence[Ask]) -> Any:
        images = [image for a in asks for image in a.images]
        extra: dict[str, Any] = {}
        if images and self.device != "cpu" and self.options.preprocess_on_device:
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

    def _expected(self, indices: list[int], asks: list[Ask], leads: list[int]) -> ExpectedGroup:
        import torch

        texts = [self.render(a.question) for a in asks]
        ends = [str(lead) for lead in leads]
        cuts = [text.rfind(VISION_END) for text in texts]
        keys = [
            (text[: cut + len(VISION_END)], a.keys)
            for text, cut, a in zip(texts, cuts, asks, strict=True)
        ]
        distinct = list(dict.fromkeys(keys))
        if min(cuts) < 0 or len(distinct) == len(keys):
            inputs = self._process([t + e for t, e in zip(texts, ends, strict=True)], asks)
            self._check_ends_with_leads(inputs["input_ids"], leads)
            return ExpectedGroup(indices, inputs, leads)
        row = {key: i for i, key in enumerate(distinct)}
        owners = [keys.index(key) for key in distinct]
        prefixes = self._process([key[0] for key in distinct], [asks[i] for i in owners])
        image_of, image_grid = self._keep_distinct_images(prefixes, [asks[i] for i in owners])
        prefix_of = [row[key] for key in keys]
        tokenizer = self.processor.tokenizer
        suffixes = tokenizer(
            [
                text[cut + len(VISION_END) :] + end
                for text, cut, end in zip(texts, cuts, ends, strict=True)
            ],
            add_special_tokens=False,
        )["input_ids"]
        if self.options.common_text:
            suffixes = _common_text_into_prefixes(prefixes, suffixes, prefix_of, tokenizer)
        buckets = self._buckets(
            prefixes, [len(key[1]) for key in distinct], prefix_of, image_of is not None
        )
        width = max(len(ids) for ids in suffixes)
        pad = tokenizer.pad_token_id
        suffix_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in suffixes])
        suffix_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in suffixes])
        self._check_ends_with_leads(suffix_ids, leads)
        return ExpectedGroup(
            indices,
            prefixes,
            leads,
            prefix_of,
            suffix_ids,
            suffix_mask,
            image_of,
            image_grid,
            buckets,
        )

    def _buckets(
        self, prefixes: Any, images_per_row: list[int], prefix_of: list[int], apart: bool
    ) -> list[Bucket]:
        """Rows by length, longest first; a row shorter than 0.8 of its bucket's longest starts
        a new bucket. One bucket when splitting is off or the images are not encoded apart."""
        lengths = prefixes["attention_mask"].sum(-1).tolist()
        order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
        split: list[list[int]] = []
        together = not (self.options.split_prefixes and apart)
        for r in order:
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
                Bucket(
                    rows=rows,
                    width=int(max(lengths[r] for r in rows)),
                    images=[starts[r] + i for r in rows for i in range(images_per_row[r])],
                    questions=questions,
                    owners=[position[prefix_of[q]] for q in questions],
                )
            )
        return buckets

    def _keep_distinct_images(
        self, inputs: Any, asks: Sequence[Ask]
    ) -> tuple[list[int] | None, Any]:
        """Drop the pixels of images already in the batch (the same item and index), so each is
        encoded once; return which distinct image each image is, and the distinct ones' grids.
        (None, None) where the model cannot take encoded images: the pixels then stay as they
        are. With ``reuse_images`` off every image counts as distinct."""
        import torch

        keys = [key for a in asks for key in a.keys]
        if not self.options.encode_images_apart or not keys:
            return None, None
        distinct: dict[object, int] = {}
        image_of = [
            distinct.setdefault(key if self.options.reuse_images else i, len(distinct))
            for i, key in enumerate(keys)
        ]
        if len(distinct) == len(keys):
            return image_of, inputs["image_grid_thw"]
        grid = inputs["image_grid_thw"]
        patches = grid.prod(-1).tolist()
        starts = [sum(patches[:i]) for i in range(len(patches))]
        first = [image_of.index(j) for j in range(len(distinct))]
        pixels = inputs["pixel_values"]
        rows = torch.cat([torch.arange(starts[i], starts[i] + patches[i]) for i in first])
        inputs["pixel_values"] = pixels[rows.to(pixels.device)]
        return image_of, grid[first]

    def _check_ends_with_leads(self, input_ids: Any, leads: list[int]) -> None:
        import torch

        wanted = torch.tensor([self.digit_ids[lead] for lead in leads], device=input_ids.device)
        if not bool((input_ids[:, -1] == wanted).all()):
            raise RuntimeError("an appended lead digit did not tokenize as its digit token")


KEPT = 2  # a question keeps at least its last two tokens: the two positions read


def common_run(suffixes: Sequence[Sequence[int]]) -> int:
    """How many leading ids the suffixes all share, leaving each at least ``KEPT`` of its own."""
    limit = min(len(ids) for ids in suffixes) - KEPT
    count = 0
    while count < limit and all(ids[count] == suffixes[0][count] for ids in suffixes):
        count += 1
    return count


def _common_text_into_prefixes(
    prefixes: Any, suffixes: list[list[int]], prefix_of: list[int], tokenizer: Any
) -> list[list[int]]:
    """Where a prefix has two or more questions, the ids they all begin with join the prefix
    (their text is tokenized apart from it, after ``<|vision_end|>``, so appending the ids to
    the prefix's row is exact); the rows are padded on the left again. Returns the suffixes
    without those ids. Every per-token tensor (ids, mask, token types) grows with the row:
    the ids, ones in the mask, zeros (text) elsewhere."""
    import torch

    common: dict[int, list[int]] = {}
    for row in sorted(set(prefix_of)):
        mine = [suffixes[q] for q, r in enumerate(prefix_of) if r == row]
        if len(mine) > 1 and (count := common_run(mine)):
            common[row] = mine[0][:count]
    if not common:
        return suffixes
    ids = prefixes["input_ids"]
    mask = prefixes["attention_mask"]
    lengths = mask.sum(-1).tolist()
    width = max(int(n) + len(common.get(r, [])) for r, n in enumerate(lengths))
    pad = int(tokenizer.pad_token_id)
    for key in [k for k, v in prefixes.items() if getattr(v, "shape", None) == ids.shape]:
        value = prefixes[key]
        rows = []
        for r in range(value.shape[0]):
            real = value[r, value.shape[1] - int(lengths[r]) :]
            added = common.get(r, [])
            if key == "input_ids":
                extra = torch.tensor(added, dtype=value.dtype, device=value.device)
                fill = pad
            else:
                extra = torch.full((len(added),), 1 if key == "attention_mask" else 0)
                extra = extra.to(dtype=value.dtype, device=value.device)
                fill = 0
            grown = torch.cat([real, extra])
            padding = torch.full(
                (width - grown.shape[0],), fill, dtype=value.dtype, device=value.device
            )
            rows.append(torch.cat([padding, grown]))
        prefixes[key] = torch.stack(rows)
    return [ids[len(common.get(r, [])) :] for ids, r in zip(suffixes, prefix_of, strict=True)]


def _shifted(group: Group, offset: int) -> Group:
    return dataclasses.replace(group, indices=[i + offset for i in group.indices])


def messages(question: JudgeQuestion) -> list[dict[str, Any]]:
    """The chat messages of a question; images as placeholders (the processor gets the pixels)."""
    content = [
        {"type": "text", "text": part} if isinstance(part, str) else {"type": "image"}
        for part in question.content
    ]
    result: list[dict[str, Any]] = []
    if question.system:
        result.append({"role": "system", "content": question.system})
    result.append({"role": "user", "content": content})
    return result
