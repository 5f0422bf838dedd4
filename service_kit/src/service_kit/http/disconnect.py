"""Cancel a request's work when its client goes away.

FastAPI does not cancel a handler when the connection drops; a long edit or a queued score would
otherwise run for nobody. After the body has been read, the next ASGI message is the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from service_kit.errors import ClientDisconnected

T = TypeVar("T")

logger = logging.getLogger(__name__)


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientDisconnected.

    The work is cancelled only on a disconnect message: if watching the connection fails in any
    other way, the work goes on and its answer is returned.
    """
    work_task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not work_task.done():
            failure = None if watcher.cancelled() else watcher.exception()
            if failure is None:
                work_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work_task  # its clean-up runs before the handler unwinds
                raise ClientDisconnected("the client disconnected before its answer")
            logger.warning("watching for a client disconnect failed (%r); carrying on", failure)
        return await work_task
    finally:
        if not work_task.done():
            work_task.cancel()
        watcher.cancel()
