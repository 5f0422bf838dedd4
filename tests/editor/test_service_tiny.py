"""The editor as users run it: a real uvicorn process, the tiny Qwen-Image-Edit, two CPU workers."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from shared_schemas import EditorInfo, EditResponse, ErrorResponse, OpenAIImagesResponse
from tests.editor.conftest import EditorHolds
from tests.orchestrator.held_backends import hold_tag, holding
from tests.support.images import b64, decode_b64_image, image_bytes
from tests.support.waiting import until

pytestmark = pytest.mark.tiny

SOURCE = b64(image_bytes(64, 64, seed=3))


def edit_payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "image": SOURCE,
        "instruction": "make the sky red",
        "num_inference_steps": 2,
        "width": 64,
        "height": 64,
        "seed": 11,
    }
    payload.update(changes)
    return payload


def test_edit_returns_decodable_png_of_requested_size(tiny_editor: str) -> None:
    response = httpx.post(
        f"{tiny_editor}/v1/edits", json=edit_payload(width=48, height=32), timeout=120
    )
    assert response.status_code == 200, response.text
    body = EditResponse.model_validate(response.json())
    image = Image.open(io.BytesIO(body.image))
    assert image.format == "PNG"
    assert image.size == (48, 32) == (body.width, body.height)
    assert np.asarray(image).std() > 0  # not a blank (NaN-decoded) image
    assert body.seed == 11 and body.num_inference_steps == 2
    assert body.model.source == "tiny" and body.model.meaningful is False
    assert body.model.model_class == "QwenImageEditPipeline"
    assert body.timings.total_s >= body.timings.edit_s > 0


def test_same_inputs_and_seed_give_the_same_image(tiny_editor: str) -> None:
    first, second, other = (
        httpx.post(f"{tiny_editor}/v1/edits", json=edit_payload(seed=seed), timeout=120)
        for seed in (5, 5, 6)
    )
    assert first.status_code == second.status_code == other.status_code == 200
    pixels = [np.asarray(decode_b64_image(r.json()["image"])) for r in (first, second, other)]
    assert np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], pixels[2])


def test_edit_without_seed_reports_the_seed_it_used(tiny_editor: str) -> None:
    payload = edit_payload()
    del payload["seed"]
    response = httpx.post(f"{tiny_editor}/v1/edits", json=payload, timeout=120)
    assert response.status_code == 200
    seeded = httpx.post(
        f"{tiny_editor}/v1/edits", json=edit_payload(seed=response.json()["seed"]), timeout=120
    )
    assert seeded.json()["image"] == response.json()["image"]


def test_two_concurrent_edits_run_on_different_workers(
    tiny_editor: str, editor_holds: EditorHolds
) -> None:
    # The first edit holds its worker until the second is answered, so the second can only have
    # run on the other worker (sent without a hold, a second request arriving after the first
    # edit was done would rightly run on worker 0 too, and the test failed on a slow machine).
    name = "two-concurrent-first"
    held = edit_payload(seed=1, instruction=f"make the sky red {hold_tag('edit', name)}")

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            first = asyncio.create_task(client.post(f"{tiny_editor}/v1/edits", json=held))
            try:
                await until(
                    lambda: name in holding(editor_holds.journal, editor_holds.gate_dir),
                    "the first edit held on a worker",
                )
                sent = client.post(f"{tiny_editor}/v1/edits", json=edit_payload(seed=2))
                try:
                    second = await asyncio.wait_for(sent, 60)
                except TimeoutError:
                    raise AssertionError("the second edit waited for the held first one") from None
            finally:
                (editor_holds.gate_dir / name).touch()
            return [await first, second]

    responses = asyncio.run(both())
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.json()["worker"] for r in responses] in ([0, 1], [1, 0])


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_edit_encodes_the_requested_output_format(tiny_editor: str, fmt: str) -> None:
    response = httpx.post(
        f"{tiny_editor}/v1/edits", json=edit_payload(output_format=fmt), timeout=120
    )
    assert response.status_code == 200
    assert Image.open(io.BytesIO(EditResponse.model_validate(response.json()).image)).format == (
        fmt.upper()
    )


def test_openai_form_edit_answers_b64_json(tiny_editor: str) -> None:
    response = httpx.post(
        f"{tiny_editor}/v1/images/edits",
        files={"image": ("in.png", image_bytes(40, 24), "image/png")},
        data={"prompt": "make it blue", "size": "32x16", "num_inference_steps": "2"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = OpenAIImagesResponse.model_validate(response.json())
    assert decode_b64_image(body.data[0].b64_json).size == (32, 16)


BAD_REQUESTS = [
    ({"image": b64(b"this is not an image")}, 422, "image"),
    ({"image": b64(b"GIF89a" + bytes(64))}, 422, "image"),
    ({"image": b64(image_bytes(64, 64)[:200])}, 400, "image"),  # truncated PNG
    ({"num_inference_steps": 1}, 422, "num_inference_steps"),
    ({"true_cfg_scale": 50}, 422, "true_cfg_scale"),
    ({"width": 50, "height": 64}, 422, "width"),
    ({"instruction": ""}, 422, "instruction"),
]


@pytest.mark.parametrize(("changes", "status", "param"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_envelope_and_the_service_keeps_serving(
    tiny_editor: str, changes: dict[str, object], status: int, param: str
) -> None:
    response = httpx.post(f"{tiny_editor}/v1/edits", json=edit_payload(**changes), timeout=60)
    assert response.status_code == status, response.text
    error = ErrorResponse.model_validate(response.json()).error
    assert error.param == param and error.message
    assert httpx.get(f"{tiny_editor}/ready", timeout=10).status_code == 200


def test_openai_form_rejects_a_non_image_upload(tiny_editor: str) -> None:
    response = httpx.post(
        f"{tiny_editor}/v1/images/edits",
        files={"image": ("x.txt", b"hello", "text/plain")},
        data={"prompt": "x"},
        timeout=60,
    )
    assert response.status_code == 400
    assert ErrorResponse.model_validate(response.json()).error.type == "invalid_image"


def test_body_over_the_limit_gets_413(tiny_editor: str) -> None:
    huge = b"x" * (65 * 2**20)
    response = httpx.post(
        f"{tiny_editor}/v1/edits",
        content=huge,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert ErrorResponse.model_validate(response.json()).error.type == "payload_too_large"


def test_info_and_metrics_describe_the_workers(tiny_editor: str) -> None:
    info = EditorInfo.model_validate(httpx.get(f"{tiny_editor}/v1/info", timeout=10).json())
    assert [w.device for w in info.workers] == ["cpu", "cpu"]
    assert info.max_in_flight == 2 + info.queue_capacity
    assert info.model is not None and info.model.id == "tiny"
    metrics = httpx.get(f"{tiny_editor}/metrics", timeout=10).text
    assert 'editor_replica_state{device="cpu",replica="0",state="ready"} 1.0' in metrics
    assert "editor_edit_seconds_bucket" in metrics
