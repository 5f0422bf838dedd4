"""Decoding client images off the event loop, with heavy decodes taken one at a time.

Every decode runs in a thread. A request is inspected first (structure and headers of all its
images: cheap, bounded by the bytes, and it refuses bad files before anything waits); then its
images are decoded. A request whose decoding costs more than ``LIGHT_DECODE_COST`` (megapixels
times passes, ``ImageHeader.decode_cost``: e.g. more than a 12 MP baseline JPEG or PNG, or a
1.2 MP progressive JPEG of 10 scans) is heavy, and heavy requests decode ``heavy_slots`` at a time
(half the CPU cores, at least one), waiting without holding a thread. Light requests never wait
for heavy ones: one client sending many large images keeps at most ``heavy_slots`` cores busy
decoding them, and another client's small image is decoded at once, on the cores left.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

LIGHT_DECODE_COST = 12.0


def default_heavy_slots() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


class DecodeGate:
    """Where a service's decodes run (see the module). One per app; used on its event loop."""

    def __init__(self, heavy_slots: int | None = None) -> None:
        self.heavy_slots = heavy_slots or default_heavy_slots()
        self._heavy = asyncio.Semaphore(self.heavy_slots)

    async def decode(self, inspect: Callable[[], float], decode: Callable[[], T]) -> T:
        """``inspect()`` (raises on bad input; returns the decode cost), then ``decode()``, both
        in threads; heavy decodes wait for a slot first."""
        cost = await asyncio.to_thread(inspect)
        if cost <= LIGHT_DECODE_COST:
            return await asyncio.to_thread(decode)
        async with self._heavy:
            running = asyncio.ensure_future(asyncio.to_thread(decode))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # A thread cannot be stopped: its slot stays taken until it ends.
                await asyncio.wait({running})
                raise
