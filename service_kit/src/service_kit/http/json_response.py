"""Large answers built off the event loop, a bounded number at a time.

An edit's answer is megabytes: base64 of up to n images, then JSON (or server-sent events) of
it. Built on the event loop, one such answer stalls every other client, ``/health`` included,
for as long as it takes (a Kubernetes readiness probe with a 4 s timeout would restart the pod).
Routes hand the building to ``off_loop``: a small pool of threads of its own (``ENCODERS``
threads, so answers being built never take every thread of the loop's default pool, and memory
for answers being built stays bounded), and return the finished bytes. pydantic serialises in
Rust, base64 and libspng release the GIL: the loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fastapi import Response
from pydantic import BaseModel

T = TypeVar("T")
ENCODERS = 4
_encoders = ThreadPoolExecutor(max_workers=ENCODERS, thread_name_prefix="answer-encoder")


async def off_loop(build: Callable[[], T]) -> T:
    """``build()`` in an encoder thread; the loop serves others meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_encoders, build)


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """A model already serialised by pydantic (in Rust, once), as the answer (small answers)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


async def json_answer(
    build: Callable[[], BaseModel],
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The model ``build`` makes, made and serialised off the loop, as the answer."""
    body = await off_loop(lambda: build().model_dump_json().encode())
    return Response(
        body, status_code=status_code, media_type="application/json", headers=dict(headers or {})
    )
