"""The compiled judge's warm-up at load: every graph a request can need is compiled before the
worker says it is ready, never inside a request.

Small synthetic items drive the backend's own prepare and score through each kind of pass the
planner makes: a single prompt and several (a batch of one is a graph of its own), shared prefixes
(a prefill that fills the KV cache, then the questions' text on it) and generate mode's one-token
steps. Batch and sequence sizes are dynamic in the compiled graphs, so 1024x1024 images and
batches of 16 reuse what these compiled (tests/reward/test_compiled_layers_tiny.py counts).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image as PILImage
from PIL.Image import Image

from reward_service.backends.base import JudgeBackend, JudgeItem, JudgeQuestion, Mode

logger = logging.getLogger(__name__)

SIDE = 64  # pixels: the smallest images the processors take whole
GENERATED = 2  # tokens: the first is the prefill, the second a one-token step


def _image(seed: int) -> Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    return PILImage.fromarray(pixels)


def _question(n: int, images: tuple[int, ...], mode: Mode, words: int) -> JudgeQuestion:
    content: list[str | int] = []
    for index in images:
        content += [f"Image {index}:", index]
    content.append("Rate it from 0 to 10. " + "Be strict. " * words)
    return JudgeQuestion(
        key=f"warm-up/{n}/{mode}/{images}/{words}",
        system="You judge images.",
        content=tuple(content),
        mode=mode,
        max_new_tokens=GENERATED if mode == "generate" else 0,
    )


def warm_up_batches() -> list[list[JudgeItem[Image]]]:
    """Batches that take every kind of pass, each with one and with several rows."""

    def item(n: int, *questions: JudgeQuestion) -> JudgeItem[Image]:
        return JudgeItem((_image(2 * n), _image(2 * n + 1)), questions)

    def single(n: int, mode: Mode = "expected") -> JudgeItem[Image]:
        return item(n, _question(n, (0, 1), mode, n % 3))

    def shared(n: int) -> JudgeItem[Image]:  # two prefixes (two images, one), two questions each
        return item(
            n,
            *(
                _question(n, images, "expected", words)
                for images in ((0, 1), (1,))
                for words in (0, 2)
            ),
        )

    return [
        [single(0)],
        [single(1), single(2)],
        [shared(3)],
        [shared(4), shared(5)],
        [single(6, "generate")],
        [single(7, "generate"), single(8, "generate")],
    ]


def warm_up(backend: JudgeBackend) -> float:
    """Score the warm-up batches (compiling the graphs); returns the seconds it took."""
    started = time.perf_counter()
    for batch in warm_up_batches():
        backend.score(backend.prepare(batch))
    seconds = time.perf_counter() - started
    logger.info("compiled judge warmed up in %.1fs", seconds)
    return seconds
