"""cancel_on_disconnect: the work is cancelled on a client disconnect, and only then."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from starlette.requests import Request
from starlette.types import Message

pytestmark = pytest.mark.anyio


def request_with(receive: Callable[[], Awaitable[Message]]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def never_disconnects() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_the_work_answer_is_returned_when_the_client_stays() -> None:
    from service_kit.http.disconnect import cancel_on_disconnect

    async def work() -> str:
        await asyncio.sleep(0)
        return "scored"

    assert await cancel_on_disconnect(request_with(never_disconnects), work()) == "scored"


async def test_a_disconnect_cancels_the_work_and_runs_its_clean_up() -> None:
    from service_kit.http.disconnect import cancel_on_disconnect

    gone = asyncio.Event()
    cleaned = asyncio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()
        return "never"

    task = asyncio.ensure_future(cancel_on_disconnect(request_with(receive), work()))
    await asyncio.sleep(0.01)
    gone.set()
    from service_kit.errors import ClientDisconnected

    with pytest.raises(ClientDisconnected):
        await task
    assert cleaned.is_set()


async def test_a_failing_watch_does_not_cancel_the_work() -> None:
    """The race that once answered 500: the watcher ended (here: raised) before the work."""
    from service_kit.http.disconnect import cancel_on_disconnect

    async def receive() -> Message:
        raise RuntimeError("the connection's receive channel broke")

    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "scored"

    task = asyncio.ensure_future(cancel_on_disconnect(request_with(receive), work()))
    await asyncio.sleep(0.01)
    assert not task.done()
    release.set()
    assert await task == "scored"


async def test_body_messages_after_the_body_do_not_count_as_a_disconnect() -> None:
    from service_kit.http.disconnect import cancel_on_disconnect

    messages: asyncio.Queue[Message] = asyncio.Queue()
    await messages.put({"type": "http.request", "body": b"", "more_body": False})
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    task = asyncio.ensure_future(cancel_on_disconnect(request_with(messages.get), work()))
    await asyncio.sleep(0.01)
    assert not task.done()
    release.set()
    assert await task == 7
