"""Limits of issue #8 that other test files did not prove yet, on real uvicorn processes.

Already proven elsewhere (not repeated here):
- an honest body over the limit gets 413: tests/editor/test_service_tiny.py and the corpus;
- a job that waited past its deadline gets 504 and never runs, editor:
  tests/editor/test_pool_faults.py::test_job_that_waits_past_its_deadline_gets_504_and_never_runs;
- a disconnected client's queued job is dropped: tests/editor/test_disconnect.py,
  tests/reward/test_disconnect.py.

Here: 413 when Content-Length lies (absent, overstated, understated, outgrown); a full queue
answers 429 with Retry-After before any image is decoded (proven by images whose decoding would
have answered 400 or 413); the judge's 504 for a request past its deadline, which never reaches
the model; image URLs are never fetched (a listener on loopback counts connections). The models
are fakes at the backend seam: these are tests of HTTP and queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from service_kit.http.body_limit import BodyLimitMiddleware
from shared_schemas import EditorInfo, ErrorResponse, RewardInfo
from tests.support.fake_judges import read_journal
from tests.support.hostile import (
    b64,
    edit_body,
    form_fields,
    multipart,
    raw_png,
    rgb,
    save,
    score_body,
)
from tests.support.servers import ServiceProcess

FAKES = {
    "editor_service": "tests.support.fake_editors:MirrorEditBackend",
    "reward_service": "tests.support.fake_judges:FakeJudge",
}
ROUTES = {"editor_service": "/v1/edits", "reward_service": "/v1/scores"}
LIMIT_MB = 1
LIMIT = LIMIT_MB * 2**20
TRUNCATED_PNG = save(rgb(64, 64), "PNG")[:300]  # decoding it answers 400
BOMB_PNG = raw_png(100_000, 100_000)  # decoding it answers 413


def service(
    module: str, tmp_path: Path, options: dict[str, Any] | None = None, **settings: str
) -> ServiceProcess:
    prefix = "EDITOR" if module == "editor_service" else "REWARD"
    env = {
        "BACKEND": FAKES[module],
        "BACKEND_OPTIONS": json.dumps(options or {}),
        "DEVICES": "cpu",
        "CACHE_DIR": str(tmp_path),
        "MAX_BODY_MB": str(LIMIT_MB),
        **settings,
    }
    return ServiceProcess(
        module, {f"{prefix}_{k}": v for k, v in env.items()}, tmp_path / f"{module}.log"
    )


@pytest.fixture(scope="module", params=["editor_service", "reward_service"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp(request.param)
    with service(request.param, tmp).running() as process:
        yield process


def valid_body(module: str) -> dict[str, Any]:
    return edit_body() if module == "editor_service" else score_body()


def error_type(response: httpx.Response) -> str:
    return ErrorResponse.model_validate(response.json()).error.type


def raw_exchange(url: str, data: bytes, then: bytes = b"") -> bytes:
    """Send ``data`` on a fresh connection and read one whole answer; then send ``then`` on the
    same connection (whatever the server makes of it) and return the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while not _complete(answer) and (chunk := sock.recv(65536)):
            answer += chunk
        if then:
            with contextlib.suppress(OSError):
                sock.sendall(then)
        return answer


def _complete(answer: bytes) -> bool:
    head, sep, rest = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":")[1])
    return False


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# --- 413 when Content-Length lies -----------------------------------------------------------


def test_a_body_streamed_past_the_limit_without_a_length_gets_413(running: ServiceProcess) -> None:
    def chunks() -> Iterator[bytes]:
        piece = b" " * 2**16
        for _ in range(LIMIT // len(piece) + 8):
            yield piece

    response = httpx.post(
        running.url + ROUTES[running.module],
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert error_type(response) == "payload_too_large"
    assert httpx.get(f"{running.url}/ready", timeout=10).status_code == 200


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    running: ServiceProcess,
) -> None:
    head = (
        f"POST {ROUTES[running.module]} HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
    ).encode()
    answer = raw_exchange(running.url, head)  # not one byte of the body follows
    assert status_of(answer) == 413
    assert b"payload_too_large" in answer
    assert httpx.get(f"{running.url}/ready", timeout=10).status_code == 200


def test_a_length_that_understates_the_body_reads_only_that_length(
    running: ServiceProcess,
) -> None:
    """Content-Length: 100, then 2 MiB more: the server answers after the 100 bytes it was told
    of (not JSON: a 4xx), does not take the rest as this request's body, and keeps serving."""
    head = (
        f"POST {ROUTES[running.module]} HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    answer = raw_exchange(running.url, head + b"{" + b" " * 99, then=b" " * (2 * LIMIT))
    assert 400 <= status_of(answer) < 500, answer[:300]
    body = valid_body(running.module)
    assert (
        httpx.post(running.url + ROUTES[running.module], json=body, timeout=60).status_code == 200
    )


@pytest.mark.anyio
async def test_a_body_that_outgrows_its_declared_length_gets_413() -> None:
    """Behind a proxy (or over HTTP/2) the bytes that arrive need not match Content-Length; the
    middleware counts what arrives. An app that reads the whole body sees 413, not the body."""
    reached: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        reached.append(size)

    limited = BodyLimitMiddleware(app, max_body_bytes=LIMIT)
    pieces = [b"x" * 2**16] * (LIMIT // 2**16 + 2)

    async def receive() -> Message:
        body = pieces.pop() if pieces else b""
        return {"type": "http.request", "body": body, "more_body": bool(pieces)}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/scores",
        "headers": [(b"content-length", b"100"), (b"content-type", b"application/json")],
    }
    await limited(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["type"] == "payload_too_large"
    assert reached == []  # the app never got to the end of the body


# --- a full queue answers 429 before decoding -------------------------------------------------


def wait_until(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"never happened: {what}")


def test_a_full_editor_queue_answers_429_before_decoding_the_image(tmp_path: Path) -> None:
    # One worker busy for a minute (60 steps of 1 s; a disconnect stops it within a step), one
    # job waiting: the queue of 1 is full.
    editor = service("editor_service", tmp_path, {"edit_delay_s": 60}, QUEUE_CAPACITY="1")
    slow = edit_body(num_inference_steps=60)
    refused = {
        "truncated image": edit_body(image=b64(TRUNCATED_PNG)),
        "decompression bomb": edit_body(image=b64(BOMB_PNG)),
        "valid image": edit_body(),
    }
    with editor.running():

        def info() -> EditorInfo:
            return EditorInfo.model_validate(httpx.get(f"{editor.url}/v1/info", timeout=10).json())

        async def scenario() -> dict[str, httpx.Response]:
            async with httpx.AsyncClient(base_url=editor.url, timeout=120) as holders:
                running = asyncio.create_task(holders.post("/v1/edits", json=slow))
                await asyncio.to_thread(
                    wait_until, lambda: info().workers[0].state == "busy", "busy"
                )
                waiting = asyncio.create_task(holders.post("/v1/edits", json=slow))
                await asyncio.to_thread(wait_until, lambda: info().queue_depth == 1, "queued")
                answers: dict[str, httpx.Response] = {}
                async with httpx.AsyncClient(base_url=editor.url, timeout=60) as client:
                    for name, body in refused.items():
                        answers[name] = await client.post("/v1/edits", json=body)
                    form, headers = multipart(form_fields(BOMB_PNG))
                    answers["form with a bomb"] = await client.post(
                        "/v1/images/edits", content=form, headers=headers
                    )
                running.cancel()
                waiting.cancel()
            return answers

        answers = asyncio.run(scenario())
        for name, response in answers.items():
            assert response.status_code == 429, f"{name}: {response.status_code} {response.text}"
            assert error_type(response) == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1
        # The holders went away: their jobs are dropped and the worker is free again.
        wait_until(lambda: info().queue_depth == 0 and info().workers[0].state == "ready", "idle")
        assert info().workers[0].restarts == 0


def judge_batches(journal: Path) -> list[dict[str, Any]]:
    return [e for e in read_journal(journal) if e["event"] == "batch"]


def queue_depth(url: str) -> int:
    info = RewardInfo.model_validate(httpx.get(f"{url}/v1/info", timeout=10).json())
    return info.queue_depth


async def hold_the_judge(
    client: httpx.AsyncClient, url: str, journal: Path, *, waiting_expires: bool = False
) -> list[asyncio.Task[httpx.Response]]:
    """Four one-item requests against a gated fake judge that takes one item per batch: one on
    the model, two more batches in flight (the replica holds one beside the one it runs, and the
    admission queue takes one more ahead), the fourth waiting in the queue. A request refused 429
    because the one before it still held its slot (slots are reserved before decoding) is
    replaced. The fake's gate holds batches for 30 s at most: what is tested next must take less.

    ``waiting_expires``: the service's request deadline is short, so the fourth may be answered
    504 before a poll sees it waiting (a loaded machine: over a second between two polls); it is
    then returned as it is, answered."""
    held = [asyncio.create_task(client.post("/v1/scores", json=score_body()))]
    await asyncio.to_thread(wait_until, lambda: judge_batches(journal), "the first batch")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for task in [t for t in held if t.done()]:
            expired = task.result().status_code == 504
            if waiting_expires and len(held) == 4 and task is held[3] and expired:
                return held  # expired in the queue before it was seen there
            assert task.result().status_code == 429, task.result().text
            held.remove(task)
        if len(held) == 4 and await asyncio.to_thread(queue_depth, url) == 1:
            return held
        if len(held) < 4:
            held.append(asyncio.create_task(client.post("/v1/scores", json=score_body())))
        await asyncio.sleep(0.2)  # pacing only: a request sent too soon is refused and replaced
    raise TimeoutError("the judge never held four requests with one waiting")


def test_a_full_judge_queue_answers_429_before_decoding_the_images(tmp_path: Path) -> None:
    gate, journal = tmp_path / "open", tmp_path / "journal"
    options = {"batch_gate": str(gate), "journal": str(journal)}
    reward = service("reward_service", tmp_path, options, QUEUE_CAPACITY="1", MAX_BATCH_IMAGES="2")
    refused = {
        "truncated image": score_body({"edited_image": b64(TRUNCATED_PNG)}),
        "decompression bomb": score_body({"source_image": b64(BOMB_PNG)}),
        "valid images": score_body(),
    }
    with reward.running():

        async def scenario() -> tuple[dict[str, httpx.Response], list[int]]:
            async with httpx.AsyncClient(base_url=reward.url, timeout=120) as client:
                held = await hold_the_judge(client, reward.url, journal)
                answers = {
                    name: await client.post("/v1/scores", json=body)
                    for name, body in refused.items()
                }
                gate.touch()
                return answers, [(await task).status_code for task in held]

        answers, held_statuses = asyncio.run(scenario())
    for name, response in answers.items():
        assert response.status_code == 429, f"{name}: {response.status_code} {response.text}"
        assert error_type(response) == "queue_full"
        assert int(response.headers["Retry-After"]) >= 1
    assert held_statuses == [200, 200, 200, 200]


# --- the judge's deadline ---------------------------------------------------------------------


def test_a_judge_request_that_waited_past_its_deadline_gets_504_and_never_reaches_the_model(
    tmp_path: Path,
) -> None:
    gate, journal = tmp_path / "open", tmp_path / "journal"
    options = {"batch_gate": str(gate), "journal": str(journal)}
    reward = service(
        "reward_service", tmp_path, options, REQUEST_TIMEOUT_S="1", MAX_BATCH_IMAGES="2"
    )
    with reward.running():

        async def scenario() -> list[int]:
            async with httpx.AsyncClient(base_url=reward.url, timeout=120) as client:
                held = await hold_the_judge(client, reward.url, journal, waiting_expires=True)
                # The waiting request is answered 504 at its deadline (1 s), while the judge is
                # still held: the queue expires waiting work without waiting for a free replica.
                done, _ = await asyncio.wait(held, timeout=20, return_when="FIRST_COMPLETED")
                assert [task.result().status_code for task in done] == [504]
                assert await asyncio.to_thread(queue_depth, reward.url) == 0
                gate.touch()
                return [(await task).status_code for task in held]

        assert sorted(asyncio.run(scenario())) == [200, 200, 200, 504]
        assert [e["size"] for e in judge_batches(journal)] == [1, 1, 1]  # not the late one
        metrics = httpx.get(f"{reward.url}/metrics", timeout=10).text
    assert 'reward_rejected_total{reason="deadline"} 1.0' in metrics


# --- no URL is ever fetched -------------------------------------------------------------------


@pytest.fixture
def canary() -> Iterator[tuple[str, socket.socket]]:
    """A listener on loopback: any connection to it would be a fetch."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/image.png", listener
    finally:
        listener.close()


def test_image_urls_are_never_fetched(
    running: ServiceProcess, canary: tuple[str, socket.socket]
) -> None:
    url, listener = canary
    host = url.removeprefix("http://").split("/")[0]
    attempts: list[httpx.Response] = []
    values = [url, f"data:image/png;base64,{url}", f"//{host}/x.png", f"url({url})"]
    with httpx.Client(base_url=running.url, timeout=30) as client:
        for value in values:
            if running.module == "editor_service":
                attempts.append(client.post("/v1/edits", json=edit_body(image=value)))
                attempts.append(client.post("/v1/edits", json=edit_body(image_url=value)))
                form, headers = multipart([("image", value, None, None), *form_fields(None)])
                attempts.append(client.post("/v1/images/edits", content=form, headers=headers))
            else:
                attempts.append(client.post("/v1/scores", json=score_body({"edited_image": value})))
                attempts.append(client.post("/v1/scores", json=score_body({"image_url": value})))
    assert [r.status_code // 100 for r in attempts] == [4] * len(attempts)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody ever connected
