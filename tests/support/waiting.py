"""Bounded waits for a state the test cannot sequence otherwise (every loop in tests is bounded in
count and time): poll a condition until it holds, or raise TimeoutError naming what never came."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

DEFAULT_TIMEOUT_S = 60.0


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.02,
) -> None:
    """Poll ``condition`` (from a thread that may block) until it is true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never happened within {timeout_s:g} s: {what}")
        time.sleep(interval_s)


async def until(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.01,
) -> None:
    """Poll ``condition`` (plain or async) on the event loop, letting other tasks run between."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"never happened within {timeout_s:g} s: {what}")
        await asyncio.sleep(interval_s)
