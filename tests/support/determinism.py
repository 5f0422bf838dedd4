"""Deterministic mode's proof, shared by the CPU (tiny) and GPU (random-full) tests.

The same judge items are scored in several placements: alone; in batches of 2, 8 and 16; in
reversed order; shuffled among other items as partners. In deterministic mode every item's
answers (expected mode: the digit log-probabilities, so the whole distribution and score mass;
generate mode: the text) must be bit-identical in all of them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

from PIL.Image import Image

from reward_service.backends.base import JudgeBackend, JudgeItem, QuestionOutput
from reward_service.messages import decode_item
from reward_service.protocols import ProtocolRegistry
from reward_service.scorer import build_items, decode_items
from shared_schemas import ScoreRequest
from tests.support.images import b64, image_bytes

Answers = tuple[QuestionOutput, ...]  # one item's answers, in its questions' order


def score_items(
    seeds: Sequence[int], size: Callable[[int], tuple[int, int]]
) -> list[dict[str, Any]]:
    """Request items (wire form) with distinct images, sizes and instructions."""
    return [
        {
            "id": f"item-{seed}",
            "source_image": b64(image_bytes(*size(seed), seed=seed)),
            "edited_image": b64(image_bytes(*size(seed + 1), seed=seed + 500)),
            "instruction": f"make the sky red {'and the grass blue ' * (seed % 4)}".strip(),
        }
        for seed in seeds
    ]


def judge_items(
    wire_items: list[dict[str, Any]], protocol: str, mode: str, max_new_tokens: int = 8
) -> list[JudgeItem[Image]]:
    """The judge items the service builds from these request items (its own code)."""
    request = ScoreRequest.model_validate(
        {"items": wire_items, "protocol": protocol, "mode": mode, "max_new_tokens": max_new_tokens}
    )
    spec = ProtocolRegistry.load(None).get(protocol)
    built = build_items(spec, request, decode_items(request.items, 2**40), "determinism")
    return [decode_item(item) for item in built]


def run(backend: JudgeBackend, batch: Sequence[JudgeItem[Image]]) -> list[Answers]:
    """One batch through the backend; each item's answers."""
    outputs = iter(backend.score(backend.prepare(batch)))
    return [tuple(next(outputs) for _ in item.questions) for item in batch]


def in_batches(
    backend: JudgeBackend, items: Sequence[JudgeItem[Image]], size: int
) -> list[Answers]:
    answers: list[Answers] = []
    for start in range(0, len(items), size):
        answers += run(backend, items[start : start + size])
    return answers


def placements(
    backend: JudgeBackend,
    items: list[JudgeItem[Image]],
    partners: list[JudgeItem[Image]],
) -> dict[str, list[Answers]]:
    """Each placement's answers for ``items``, in ``items``' order."""
    found = {
        "alone": [run(backend, [item])[0] for item in items],
        "batches of 2": in_batches(backend, items, 2),
        "batches of 8": in_batches(backend, items, 8),
        "a batch of 16": in_batches(backend, items, 16),
        "reversed": in_batches(backend, items[::-1], 16)[::-1],
    }
    mixed = [(True, i) for i in range(len(items))] + [(False, i) for i in range(len(partners))]
    random.Random(7).shuffle(mixed)
    pool = [items[i] if mine else partners[i] for mine, i in mixed]
    answers = in_batches(backend, pool, 8)
    by_item = {i: a for (mine, i), a in zip(mixed, answers, strict=True) if mine}
    found["shuffled among partners"] = [by_item[i] for i in range(len(items))]
    return found


def differences(found: dict[str, list[Answers]]) -> dict[str, list[int]]:
    """For each placement, the items whose answers are not bit-identical to their answers alone."""
    reference = found["alone"]
    return {
        name: [i for i, (a, b) in enumerate(zip(reference, answers, strict=True)) if a != b]
        for name, answers in found.items()
    }


def answer_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """What must not move in a served item score: every question's score, distribution, score
    mass and text (not its timings)."""
    return [
        {k: q[k] for k in ("name", "score", "distribution", "score_mass", "raw_text", "error")}
        for q in result["questions"]
    ]


async def served_placements(
    url: str,
    wire_items: list[dict[str, Any]],
    body: dict[str, Any],
    clients: int = 16,
    timeout_s: float = 600,
) -> dict[str, list[list[list[dict[str, Any]]]]]:
    """Each item scored through the service alone (one request at a time), then by ``clients``
    concurrent clients whose requests hold the items in other groupings and orders (and so
    share batches in whatever way the service's timing gives). For each item, every answer it
    got: ``{"alone": [[answer]...], "concurrent": [[answer, ...]...]}``, in items' order.

    Every result must say it was scored in deterministic mode."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout_s) as client:

        async def score(items: list[int]) -> list[dict[str, Any]]:
            response = await client.post(
                f"{url}/v1/scores", json={**body, "items": [wire_items[i] for i in items]}
            )
            assert response.status_code == 200, response.text
            payload = response.json()
            assert payload["model"]["deterministic"] is True
            results: list[dict[str, Any]] = payload["results"]
            assert all(r["deterministic"] is True for r in results)
            return results

        count = len(wire_items)
        alone = [[answer_of((await score([i]))[0])] for i in range(count)]
        rng = random.Random(11)
        requests: list[list[int]] = []
        for n in range(clients):
            order = list(range(count))
            rng.shuffle(order)
            requests.append(order[: 1 + n % 4])  # 1 to 4 items a request
        requests[0] = list(range(count))[::-1]  # and one request with every item, reversed
        answers = await asyncio.gather(*(score(r) for r in requests))
    concurrent: list[list[list[dict[str, Any]]]] = [[] for _ in range(count)]
    for request, results in zip(requests, answers, strict=True):
        for i, result in zip(request, results, strict=True):
            concurrent[i].append(answer_of(result))
    return {"alone": alone, "concurrent": concurrent}


def served_differences(found: dict[str, list[list[list[dict[str, Any]]]]]) -> list[int]:
    """Items whose answers under load are not all identical to their answer alone."""
    return [
        i
        for i, (alone, under_load) in enumerate(
            zip(found["alone"], found["concurrent"], strict=True)
        )
        if any(answer != alone[0] for answer in under_load)
    ]
