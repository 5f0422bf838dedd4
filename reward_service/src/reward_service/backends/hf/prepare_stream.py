"""Preparing a batch on a CUDA stream of its own, so it never queues behind the model.

The worker's preparing thread runs the image processor on the model's device (resize, normalise,
patchify). On the default stream every copy to the GPU and every kernel of it waits behind the
model thread's queued forward passes: measured on an H100 (bench/judge_prepare.py, records in
docs/results/h100-2026-12-06-round3/run9-judge-prepare/), a `single` batch of 32 1024x1024
images took 0.20 s to prepare on an idle GPU but 4.85 s while a stand-in model kept the default
stream busy, and 0.32 s on a stream of its own. In the service (run 8) preparation took 22.3 s
of a 30 s run and the model waited 3.5 s for it.

So each preparing thread prepares on a stream of its own (option ``prepare_stream``: ``side``,
the default; ``default`` as before) and waits for that stream before handing the batch over: the
model thread then gets finished tensors. Their memory came from the side stream's pool, so the
model thread marks them as used on its own stream too (``hand_over``): the allocator then does
not give that memory to the next preparation while the model may still read it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any, Literal

from reward_service.backends.base import InvalidOption

StreamChoice = Literal["side", "default"]
CHOICES: tuple[StreamChoice, ...] = ("side", "default")


def stream_choice(options: dict[str, Any]) -> StreamChoice:
    """The ``prepare_stream`` option (``side`` unless set), or InvalidOption naming the choices."""
    value = str(options.get("prepare_stream", "side")).strip().lower()
    for choice in CHOICES:
        if value == choice:
            return choice
    raise InvalidOption(f"prepare_stream must be one of {', '.join(CHOICES)}, not {value!r}")


class PrepareStreams:
    """One CUDA stream per preparing thread (none on the CPU, or with ``default``)."""

    def __init__(self, device: str, choice: StreamChoice) -> None:
        self.device = device
        self.enabled = choice == "side" and device.startswith("cuda")
        self._local = threading.local()

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Work inside runs on this thread's stream; on leaving, the stream's work is done."""
        if not self.enabled:
            yield
            return
        import torch

        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(stream):
            yield
        stream.synchronize()

    def hand_over(self, prepared: object) -> None:
        """On the model thread, before using a prepared batch: its device tensors are in use on
        the current stream (``Tensor.record_stream``) until the model's work on them is done."""
        if not self.enabled:
            return
        import torch

        stream = torch.cuda.current_stream(self.device)
        for tensor in tensors_of(prepared):
            if tensor.is_cuda:
                tensor.record_stream(stream)


def tensors_of(value: object, depth: int = 0) -> Iterator[Any]:
    """Every torch tensor in a prepared batch: dataclasses, mappings (BatchFeature), lists."""
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif depth > 4:
        return
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from tensors_of(getattr(value, field.name), depth + 1)
    elif isinstance(value, dict) or (hasattr(value, "data") and isinstance(value.data, dict)):
        mapping = value if isinstance(value, dict) else value.data
        for item in mapping.values():
            yield from tensors_of(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors_of(item, depth + 1)
