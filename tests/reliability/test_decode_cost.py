"""The cost of reading an image is bounded by its size, not by tricks in the file: real services
over real HTTP (the judge and the editor with fakes at the backend seam: the tests are about
decoding and scheduling in the API process, not the models).

- Trick files (thousands of JPEG scans, a million PNG chunks) are refused 413 naming the field
  and the limit, before any decoder runs; the service serves the next request.
- Client A keeps sending heavy requests (two 4096x4096 progressive JPEGs each, several at a time)
  while client B sends a 64x64 score: B's answer arrives while A's requests are still being
  decoded one after another (heavy decodes take one slot per two cores; light ones never wait
  for them). The bound is stated as ordering: while B's request is in flight, at most
  ``heavy_slots + 1`` of A's requests complete. With every decode in its own thread (before),
  A's decodes shared the cores with B's and B finished after a whole wave of A's.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from service_kit.images.decode_gate import default_heavy_slots
from tests.reliability.services import service_process
from tests.support.images import image_bytes, make_image

A_CONCURRENCY = 8  # more than the default thread pool's 6 threads on 2 cores
A_REQUESTS = 16  # B is sent after A's first answer: a dozen of A's are still to come


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def heavy_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    make_image(4096, 4096, seed=seed).save(buffer, format="JPEG", quality=95, progressive=True)
    return buffer.getvalue()


def empty_scans_jpeg(count: int) -> bytes:
    buffer = io.BytesIO()
    make_image(256, 256, seed=9).save(buffer, format="JPEG", quality=90, progressive=True)
    data = buffer.getvalue()
    last = [m.start() for m in re.finditer(rb"\xff\xda", data)][-1]
    (length,) = struct.unpack_from(">H", data, last + 2)
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + data[last : last + 2 + length] * count + data[eoi:]


def png_with_empty_chunks(count: int) -> bytes:
    png = image_bytes(64, 64, seed=8)
    chunk = b"\x00\x00\x00\x00quIt" + struct.pack(">I", zlib.crc32(b"quIt"))
    return png[:33] + chunk * count + png[33:]


def score(source: bytes, edited: bytes) -> dict[str, Any]:
    item = {"source_image": b64(source), "edited_image": b64(edited), "instruction": "score=6"}
    return {"items": [item], "protocol": "single"}


def edit(image: bytes) -> dict[str, Any]:
    return {"image": b64(image), "instruction": "mirror", "num_inference_steps": 2, "seed": 1}


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = service_process(
        "reward_service", tmp_path_factory.mktemp("decode-judge"), QUEUE_CAPACITY="64"
    )
    with process.running(ready_timeout_s=120):
        yield process.url


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = service_process("editor_service", tmp_path_factory.mktemp("decode-editor"))
    with process.running(ready_timeout_s=120):
        yield process.url


TRICKS = {
    "jpeg-3000-empty-scans": (lambda: empty_scans_jpeg(3000), "scans"),
    "png-1m-empty-chunks": (lambda: png_with_empty_chunks(1_000_000), "chunks"),
}


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_trick_files_are_refused_413_naming_the_field_and_the_limit(
    name: str, judge: str, editor: str
) -> None:
    make, limit = TRICKS[name]
    trick, plain = make(), image_bytes(32, 32, seed=1)
    with httpx.Client(timeout=120) as http:
        for url, body, param in [
            (f"{judge}/v1/scores", score(plain, trick), "items[0].edited_image"),
            (f"{editor}/v1/edits", edit(trick), "image"),
        ]:
            response = http.post(url, json=body)
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert (error["type"], error["param"]) == ("image_too_complex", param)
            assert limit in error["message"]
        served = http.post(f"{judge}/v1/scores", json=score(plain, plain))
    assert served.status_code == 200, served.text


def test_a_small_request_is_not_held_up_by_another_clients_heavy_images(
    judge: str,
) -> None:
    heavy = [score(heavy_jpeg(2 * i), heavy_jpeg(2 * i + 1)) for i in range(2)]
    small = score(image_bytes(64, 64, seed=3), image_bytes(64, 64, seed=4))
    done_at: list[float] = []
    failures: list[str] = []
    sent = iter(range(A_REQUESTS))
    lock = threading.Lock()

    def client_a() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    i = next(sent, None)
                if i is None:
                    return
                response = http.post(f"{judge}/v1/scores", json=heavy[i % 2])
                with lock:
                    done_at.append(time.monotonic())
                    if response.status_code != 200:
                        failures.append(response.text[:200])

    threads = [threading.Thread(target=client_a) for _ in range(A_CONCURRENCY)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(timeout=600) as http:
            deadline = time.monotonic() + 300
            while not done_at and time.monotonic() < deadline:  # A in its steady state
                time.sleep(0.05)
            assert done_at, "client A never got an answer"
            started = time.monotonic()
            answer = http.post(f"{judge}/v1/scores", json=small)
            finished = time.monotonic()
    finally:
        for thread in threads:
            thread.join(timeout=900)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["scored"] is True
    during = sum(started <= t <= finished for t in done_at)
    after = sum(t > finished for t in done_at)
    print(
        f"\nB's 64x64 score: {finished - started:.2f}s while A's heavy requests ran; "
        f"A completed {during} during it and {after} after it"
    )
    assert during <= default_heavy_slots() + 1
    assert after > 0  # A was still at it when B was answered
    assert not failures, failures
    assert len(done_at) == A_REQUESTS


def test_heavy_images_reach_the_judge_scaled_to_its_image_budget() -> None:
    from reward_service.scorer import decode_items
    from shared_schemas import ScoreRequest

    request = ScoreRequest.model_validate(score(heavy_jpeg(7), image_bytes(4096, 1024, seed=5)))
    images = decode_items(request.items, max_pixels=4096 * 4096, judge_pixels=2**21)[0]
    assert images.source.width * images.source.height <= 2**21
    assert images.edited.width * images.edited.height <= 2**21
    assert abs(images.edited.width - 4 * images.edited.height) <= 4  # aspect kept
    assert Image.frombytes("RGB", (images.source.width, images.source.height), images.source.pixels)
