"""Nothing heavy on the event loop (issue 31, class 2): while the largest answer a client may
ask for (n = 4 at 1024x1024, streamed as server-sent events, or as JSON) is being encoded,
base64'd and framed, the service answers /health. Real worker processes with the fake editor
(the backend seam), the app in process so the encoder can be held.

The encoder is held (blocked on an event) until /health has been answered: off the loop, /health
is answered and releases it; on the loop, nothing else could run, the encoder would give up
waiting and record that it stalled the loop. No timing decides the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import editor_service.openai_images
from editor_service.app import create_app
from editor_service.config import EditorSettings
from shared_schemas import EditRequest
from tests.support.images import image_bytes

pytestmark = pytest.mark.anyio

FAKE = "tests.support.fake_editors:MirrorEditBackend"
HELD_S = 30.0  # how long a held encoder waits for /health before it records a stalled loop


class HeldEncoder:
    """Wraps an encoding function: the first call waits for ``release``; every call records
    whether it ran on the event loop's thread."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.on_loop: list[bool] = []
        self.stalled = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        if not self.entered.is_set():
            self.entered.set()
            self.stalled = not self.release.wait(HELD_S)
        return self.inner(*args, **kwargs)


async def client_for(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = EditorSettings(
        backend=FAKE, devices=["cpu"], cache_dir=tmp_path, max_image_pixels=1024 * 1024
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://editor", timeout=120
        ) as client:
            yield client


@pytest.mark.parametrize("stream", [True, False])
async def test_health_answers_while_the_largest_answer_is_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    held = HeldEncoder(editor_service.openai_images.encode_image_b64)
    monkeypatch.setattr(editor_service.openai_images, "encode_image_b64", held)
    png = image_bytes(1024, 1024, seed=3)
    async for http in client_for(tmp_path):
        for _ in range(600):  # ready: bounded wait
            if (await http.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        edit = asyncio.create_task(
            http.post(
                "/v1/images/edits",
                data={"prompt": "mirror", "n": "4", "stream": str(stream).lower()},
                files={"image": ("a.png", png, "image/png")},
            )
        )
        for _ in range(1200):  # until the encoder holds the answer (bounded)
            if held.entered.is_set() or edit.done():
                break
            await asyncio.sleep(0.05)
        assert held.entered.is_set(), (await edit).text
        health = await http.get("/health")  # runs only if the loop is free
        held.release.set()
        assert health.status_code == 200
        answer = await edit
    assert answer.status_code == 200, answer.text
    assert held.stalled is False
    assert held.on_loop and not any(held.on_loop)
    if stream:
        assert answer.text.count("event: image_edit.completed") == 4
    else:
        assert len(answer.json()["data"]) == 4


async def test_health_answers_while_an_edit_request_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON edit carries megabytes of base64 (up to six images): reading it into an
    EditRequest (JSON, base64 decoding) runs off the loop, as the judge's requests do."""
    held = HeldEncoder(EditRequest.model_validate_json)
    monkeypatch.setattr(EditRequest, "model_validate_json", held)
    image = base64.b64encode(image_bytes(64, 64, seed=4)).decode()
    body = {"image": image, "instruction": "mirror", "num_inference_steps": 2}
    async for http in client_for(tmp_path):
        for _ in range(600):  # ready: bounded wait
            if (await http.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        edit = asyncio.create_task(http.post("/v1/edits", json=body))
        for _ in range(1200):  # until the parse holds the request (bounded)
            if held.entered.is_set() or edit.done():
                break
            await asyncio.sleep(0.05)
        assert held.entered.is_set(), f"the body was parsed elsewhere: {(await edit).text}"
        health = await http.get("/health")  # runs only if the loop is free
        held.release.set()
        assert health.status_code == 200
        answer = await edit
    assert answer.status_code == 200, answer.text
    assert held.stalled is False
    assert held.on_loop and not any(held.on_loop)
