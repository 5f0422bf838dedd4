"""/v1/images/edits as the official ``openai`` SDK uses it (sync and async), against a real
editor process on the tiny Qwen-Image-Edit: every parameter the SDK can send is honoured or
refused with a 400 naming it."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.support.images import decode_b64_image, image_bytes
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny

CHEAP = {"num_inference_steps": 2}  # editbench's own field, sent by the SDK's extra_body


def png(width: int = 40, height: int = 24, seed: int = 0) -> tuple[str, bytes, str]:
    return ("in.png", image_bytes(width, height, seed=seed), "image/png")


def mask_png(width: int, height: int, *, alpha: bool = True) -> tuple[str, bytes, str]:
    """Transparent (edit here) in the middle, opaque (keep) around it."""
    if alpha:
        image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
        image.paste((0, 0, 0, 0), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    else:
        image = Image.new("RGB", (width, height), (0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ("mask.png", buffer.getvalue(), "image/png")


@pytest.fixture(scope="module")
def client(tiny_editor: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{tiny_editor}/v1", api_key="unused", max_retries=0) as made:
        yield made


def pixels(b64_json: str | None) -> np.ndarray[Any, Any]:
    assert b64_json is not None
    return np.asarray(decode_b64_image(b64_json))


def refused(call: Any) -> dict[str, Any]:
    """The 400's error object, as the SDK raises it."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    return body


def test_the_basic_sync_call_edits_at_the_requested_size(client: openai.OpenAI) -> None:
    answer = client.images.edit(image=png(), prompt="make it blue", size="32x16", extra_body=CHEAP)
    assert len(answer.data or []) == 1
    assert pixels(answer.data[0].b64_json).shape == (16, 32, 3)  # type: ignore[index]
    assert answer.size == "32x16" and answer.output_format == "png"


def test_image_list_sent_as_image_brackets_works_with_one_image(client: openai.OpenAI) -> None:
    answer = client.images.edit(
        image=[png()], prompt="make it blue", size="32x32", extra_body=CHEAP
    )
    assert pixels(answer.data[0].b64_json).shape == (32, 32, 3)  # type: ignore[index]


def test_n_images_come_from_n_consecutive_seeds(client: openai.OpenAI) -> None:
    common: dict[str, Any] = {"image": png(), "prompt": "make it blue", "size": "32x32"}
    both = client.images.edit(n=2, extra_body={**CHEAP, "seed": 7}, **common)
    second = client.images.edit(extra_body={**CHEAP, "seed": 8}, **common)
    assert len(both.data or []) == 2
    first_image, second_image = (pixels(d.b64_json) for d in both.data or [])
    assert not np.array_equal(first_image, second_image)
    assert np.array_equal(second_image, pixels(second.data[0].b64_json))  # type: ignore[index]


def test_n_images_without_a_seed_say_their_seeds_so_each_can_be_made_again(
    client: openai.OpenAI,
) -> None:
    common: dict[str, Any] = {"image": png(), "prompt": "make it blue", "size": "32x32"}
    raw = client.images.with_raw_response.edit(n=2, extra_body=CHEAP, **common)
    answer = raw.parse()
    # Fields the SDK keeps though it does not know them: each image's seed and timings, the model.
    extras = [d.model_extra or {} for d in answer.data or []]
    seeds = [extra["seed"] for extra in extras]
    assert len(seeds) == 2 and all(isinstance(s, int) for s in seeds) and seeds[0] != seeds[1]
    assert raw.headers["x-editbench-seeds"] == f"{seeds[0]},{seeds[1]}"
    assert all(extra["timings"]["total_s"] >= extra["timings"]["pipeline_s"] for extra in extras)
    assert (answer.model_extra or {})["model"]["id"] == "tiny"
    # The second image made again from its seed alone.
    again = client.images.edit(extra_body={**CHEAP, "seed": seeds[1]}, **common)
    assert np.array_equal(pixels(again.data[0].b64_json), pixels(answer.data[1].b64_json))  # type: ignore[index]
    stream = client.images.edit(stream=True, extra_body={**CHEAP, "seed": seeds[1]}, **common)
    assert [(e.model_extra or {})["seed"] for e in stream] == [seeds[1]]


def test_stream_true_yields_one_completed_event_per_image(client: openai.OpenAI) -> None:
    stream = client.images.edit(
        image=png(), prompt="make it blue", size="32x16", stream=True, extra_body=CHEAP
    )
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.completed"]
    assert pixels(events[0].b64_json).shape == (16, 32, 3)
    assert events[0].size == "32x16" and events[0].output_format == "png"


def test_the_async_client_edits_and_streams(tiny_editor: str) -> None:
    async def main() -> tuple[Any, list[Any]]:
        async with openai.AsyncOpenAI(base_url=f"{tiny_editor}/v1", api_key="x") as client:
            plain = await client.images.edit(
                image=png(), prompt="make it red", size="16x16", extra_body=CHEAP
            )
            stream = await client.images.edit(
                image=png(),
                prompt="make it red",
                size="16x16",
                n=2,
                stream=True,
                extra_body=CHEAP,
            )
            return plain, [event async for event in stream]

    plain, events = asyncio.run(main())
    assert pixels(plain.data[0].b64_json).shape == (16, 16, 3)
    assert [e.type for e in events] == ["image_edit.completed"] * 2


def test_output_compression_sets_the_jpeg_quality(client: openai.OpenAI) -> None:
    sizes = []
    for compression in (5, 95):
        answer = client.images.edit(
            image=png(64, 64, seed=4),
            prompt="make it blue",
            size="64x64",
            output_format="jpeg",
            output_compression=compression,
            extra_body={**CHEAP, "seed": 3},
        )
        data = answer.data[0].b64_json  # type: ignore[index]
        assert data is not None
        assert decode_b64_image(data).format == "JPEG"
        sizes.append(len(data))
    assert sizes[0] < sizes[1]


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"size": "63x63"}, "size"),
    ({"size": "big"}, "size"),
    ({"n": 5}, "n"),
    ({"quality": "high"}, "quality"),
    ({"background": "transparent"}, "background"),
    ({"input_fidelity": "low"}, "input_fidelity"),
    ({"response_format": "url"}, "response_format"),
    ({"output_format": "gif"}, "output_format"),
    ({"output_compression": 50}, "output_compression"),  # png is lossless
    ({"stream": True, "partial_images": 2}, "partial_images"),
    ({"model": "gpt-image-1"}, "model"),
    ({"complexity": "high"}, "complexity"),
    ({"frame_count": 4}, "frame_count"),
    ({"extra_body": {"guidance": 3}}, "guidance"),
]


@pytest.mark.parametrize(("changes", "param"), REFUSALS)
def test_a_parameter_that_cannot_be_honoured_is_refused_naming_it(
    client: openai.OpenAI, changes: dict[str, Any], param: str
) -> None:
    kwargs: dict[str, Any] = {"image": png(), "prompt": "make it blue", **changes}
    error = refused(lambda: client.images.edit(**kwargs))
    assert error["param"] == param
    assert param in error["message"]


def test_several_images_on_a_single_image_model_are_refused_naming_image(
    client: openai.OpenAI,
) -> None:
    error = refused(lambda: client.images.edit(image=[png(), png(seed=1)], prompt="combine them"))
    assert error["param"] == "image" and "takes 1" in error["message"]


def test_further_inputs_on_the_json_route_of_a_single_image_model_are_a_400_naming_the_limit(
    tiny_editor: str,
) -> None:
    body = {
        "image": b64(png()[1]),
        "images": [b64(png(seed=1)[1])],
        "instruction": "combine them",
        **CHEAP,
    }
    answer = httpx.post(f"{tiny_editor}/v1/edits", json=body, timeout=60)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "images"
    assert "2 input images given" in error["message"] and "takes 1" in error["message"]


def test_mask_runs_the_inpainting_pipeline(client: openai.OpenAI, tiny_editor: str) -> None:
    kwargs: dict[str, Any] = {"image": png(32, 32), "prompt": "make it blue"}
    masked = client.images.edit(mask=mask_png(32, 32), extra_body={**CHEAP, "seed": 1}, **kwargs)
    plain = client.images.edit(extra_body={**CHEAP, "seed": 1}, **kwargs)
    out = pixels(masked.data[0].b64_json)  # type: ignore[index]
    assert out.shape == (1024, 1024, 3)  # the inpainting pipeline's ~1 MP at the aspect
    # Same seed, same prompt: the mask, not ignored, made another image.
    assert not np.array_equal(out, pixels(plain.data[0].b64_json))  # type: ignore[index]
    assert httpx.get(f"{tiny_editor}/ready", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("changes", "param", "words"),
    [
        ({"mask": mask_png(32, 32, alpha=False)}, "mask", "alpha"),
        ({"mask": mask_png(16, 16)}, "mask", "size"),
        ({"mask": mask_png(32, 32), "size": "32x32"}, "size", "auto"),
    ],
)
def test_a_mask_that_cannot_be_used_is_refused_naming_it(
    client: openai.OpenAI, changes: dict[str, Any], param: str, words: str
) -> None:
    kwargs: dict[str, Any] = {"image": png(32, 32), "prompt": "make it blue", **changes}
    error = refused(lambda: client.images.edit(**kwargs))
    assert error["param"] == param and words in error["message"]


PLUS_LOG = "editor-plus.log"


@pytest.fixture(scope="module")
def plus_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("editor-plus-logs")


@pytest.fixture(scope="module")
def plus_editor(model_cache: Path, plus_logs: Path) -> Iterator[str]:
    env = {
        "EDITOR_MODEL": "tiny-plus",
        "EDITOR_DEVICES": "cpu",
        "EDITOR_CACHE_DIR": str(model_cache),
        **REUSE_FREED_MEMORY,
    }
    with ServiceProcess("editor_service", env, plus_logs / PLUS_LOG).running() as service:
        yield service.url


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_json_route_gives_an_edit_plus_pipeline_every_input_image(
    plus_editor: str, plus_logs: Path
) -> None:
    info = httpx.get(f"{plus_editor}/v1/info", timeout=10).json()
    assert info["family"]["max_images"] == 3
    common = {"instruction": "put the second on the first", "seed": 5, "width": 32, "height": 32}
    first, second = b64(image_bytes(40, 24, seed=1)), b64(image_bytes(24, 40, seed=2))
    both = httpx.post(
        f"{plus_editor}/v1/edits",
        json={"image": first, "images": [second], **common, **CHEAP},
        timeout=120,
    )
    one = httpx.post(
        f"{plus_editor}/v1/edits", json={"image": first, **common, **CHEAP}, timeout=120
    )
    assert both.status_code == 200 and one.status_code == 200
    # The pipeline was handed both images (the backend logs what it passes), and the second
    # changed the edit: the same seed without it gives another image.
    log = (plus_logs / PLUS_LOG).read_text()
    assert "2 input images to QwenImageEditPlusPipeline: 40x24, 24x40" in log
    assert not np.array_equal(pixels(both.json()["image"]), pixels(one.json()["image"]))
    too_many = httpx.post(
        f"{plus_editor}/v1/edits",
        json={"image": first, "images": [second] * 3, **common, **CHEAP},
        timeout=60,
    )
    assert too_many.status_code == 400
    error = too_many.json()["error"]
    assert error["param"] == "images" and "takes at most 3" in error["message"]
    broken = httpx.post(
        f"{plus_editor}/v1/edits",
        json={"image": first, "images": [b64(image_bytes(16, 16)[:40])], **common, **CHEAP},
        timeout=60,
    )
    assert broken.status_code == 400 and broken.json()["error"]["param"] == "images[0]"


def test_several_images_go_to_an_edit_plus_model_which_has_no_mask(plus_editor: str) -> None:
    with openai.OpenAI(base_url=f"{plus_editor}/v1", api_key="x", max_retries=0) as client:
        both = client.images.edit(
            image=[png(seed=1), png(seed=2)],
            prompt="put the first on the second",
            size="32x32",
            extra_body={**CHEAP, "seed": 5},
        )
        one = client.images.edit(
            image=[png(seed=1)],
            prompt="put the first on the second",
            size="32x32",
            extra_body={**CHEAP, "seed": 5},
        )
        assert pixels(both.data[0].b64_json).shape == (32, 32, 3)  # type: ignore[index]
        # The second image reached the model: the same seed gives another image without it.
        assert not np.array_equal(
            pixels(both.data[0].b64_json),  # type: ignore[index]
            pixels(one.data[0].b64_json),  # type: ignore[index]
        )
        error = refused(lambda: client.images.edit(image=png(), prompt="x", mask=mask_png(40, 24)))
        assert error["param"] == "mask"
        error = refused(
            lambda: client.images.edit(image=[png(seed=i) for i in range(4)], prompt="x")
        )
        assert error["param"] == "image"
