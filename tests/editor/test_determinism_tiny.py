"""The same edit request and seed give a bit-identical image on either worker, whatever else runs.

A real editor process, the tiny Qwen-Image-Edit, two CPU workers: one request is sent several
times at once among other edits (other seeds, sizes and instructions), in rounds until both
workers have served it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from shared_schemas import EditorInfo
from tests.editor.test_service_tiny import edit_payload

pytestmark = pytest.mark.tiny

ROUNDS = 4  # at most; each round sends the request 3 times among 3 others


async def round_of(url: str, payload: dict[str, Any], n: int) -> list[httpx.Response]:
    others = [
        edit_payload(seed=100 + n * 10 + i, width=48 + 16 * i, instruction=f"add {i} birds")
        for i in range(3)
    ]
    bodies = [payload, others[0], payload, others[1], payload, others[2]]
    async with httpx.AsyncClient(timeout=120) as client:
        return list(await asyncio.gather(*(client.post(f"{url}/v1/edits", json=b) for b in bodies)))


def test_an_edit_is_bit_identical_on_every_worker_beside_other_jobs(tiny_editor: str) -> None:
    info = EditorInfo.model_validate(httpx.get(f"{tiny_editor}/v1/info", timeout=10).json())
    assert info.model is not None and info.model.deterministic
    payload = edit_payload(seed=21, instruction="make the sky red and the sea green")
    alone = httpx.post(f"{tiny_editor}/v1/edits", json=payload, timeout=120)
    assert alone.status_code == 200, alone.text
    images: dict[int, set[str]] = {}
    for n in range(ROUNDS):
        responses = asyncio.run(round_of(tiny_editor, payload, n))
        assert [r.status_code for r in responses] == [200] * 6
        for response in responses[0::2]:
            images.setdefault(response.json()["worker"], set()).add(response.json()["image"])
        if len(images) == 2:
            break
    assert sorted(images) == [0, 1], "both workers should have served the request"
    assert {image for found in images.values() for image in found} == {alone.json()["image"]}
