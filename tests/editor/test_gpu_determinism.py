"""The editor on a GPU (random-full): one request and seed, a bit-identical image on each worker.

Run on a GPU machine: ``pytest -m gpu tests/editor``. Two workers (two GPUs where there are two,
else both on the one GPU: the model fits twice at this size); the request is sent several times
at once among other edits, in rounds until both workers have served it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch

from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

ROUNDS = 4


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("editor")
    devices = "cuda:0,cuda:1" if torch.cuda.device_count() > 1 else "cuda:0,cuda:0"
    env = {
        "EDITOR_MODEL": "random-full",
        "EDITOR_DEVICES": devices,
        "EDITOR_CACHE_DIR": str(folder),
    }
    service = ServiceProcess("editor_service", env, folder / "editor.log")
    with service.running(ready_timeout_s=600) as running:
        yield running.url


def payload(seed: int, instruction: str, side: int = 512) -> dict[str, Any]:
    return {
        "image": b64(image_bytes(512, 512, seed=3)),
        "instruction": instruction,
        "num_inference_steps": 4,
        "true_cfg_scale": 4.0,
        "width": side,
        "height": side,
        "seed": seed,
    }


def test_an_edit_is_bit_identical_on_every_worker_beside_other_jobs(editor: str) -> None:
    wanted = payload(21, "make the sky red and the sea green")
    alone = httpx.post(f"{editor}/v1/edits", json=wanted, timeout=600)
    assert alone.status_code == 200, alone.text
    assert alone.json()["model"]["deterministic"] is True
    images: dict[int, set[str]] = {}
    for n in range(ROUNDS):
        others = [payload(100 + n * 10 + i, f"add {i} birds", 384 + 128 * i) for i in range(2)]
        bodies = [wanted, others[0], wanted, others[1]]

        async def send(bodies: list[dict[str, Any]] = bodies) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=600) as client:
                return list(
                    await asyncio.gather(
                        *(client.post(f"{editor}/v1/edits", json=b) for b in bodies)
                    )
                )

        responses = asyncio.run(send())
        assert [r.status_code for r in responses] == [200] * 4
        for response in responses[0::2]:
            images.setdefault(response.json()["worker"], set()).add(response.json()["image"])
        if len(images) == 2:
            break
    assert sorted(images) == [0, 1], "both workers should have served the request"
    assert {image for found in images.values() for image in found} == {alone.json()["image"]}
