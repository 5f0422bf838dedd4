"""Edit requests and responses: round trips, defaults, and the values they refuse."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared_schemas import (
    EditorInfo,
    EditRequest,
    EditResponse,
    EditTimings,
    ErrorResponse,
    ModelInfo,
    WorkerInfo,
)
from tests.support.images import b64, image_bytes

PNG = image_bytes(16, 16)
MODEL = ModelInfo(
    id="tiny",
    source="tiny",
    revision="sha256:0",
    model_class="QwenImageEditPipeline",
    dtype="float32",
    meaningful=False,
)


def test_edit_request_round_trips_through_json() -> None:
    request = EditRequest(
        image=b64(PNG), instruction="make the sky red", seed=7, width=64, height=32
    )
    again = EditRequest.model_validate_json(request.model_dump_json())
    assert again == request
    assert again.image == PNG


def test_edit_request_leaves_steps_and_guidance_to_the_loaded_family() -> None:
    request = EditRequest(image=b64(PNG), instruction="x")
    # The service fills the family's published defaults (Qwen-Image-Edit: 50 steps, true CFG 4).
    assert (request.num_inference_steps, request.true_cfg_scale, request.parameters) == (
        None,
        None,
        {},
    )
    assert request.negative_prompt == " "
    assert request.seed is None and request.width is None and request.output_format == "png"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"instruction": ""}, "instruction"),
        ({"num_inference_steps": 1}, "num_inference_steps"),
        ({"num_inference_steps": 201}, "num_inference_steps"),
        ({"true_cfg_scale": 0.5}, "true_cfg_scale"),
        ({"seed": -1}, "seed"),
        ({"width": 100, "height": 64}, "width"),  # not a multiple of 16
        ({"width": 64}, "width and height"),
        ({"output_format": "gif"}, "output_format"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_edit_request_rejects_out_of_range_values(changes: dict[str, object], field: str) -> None:
    payload: dict[str, object] = {"image": b64(PNG), "instruction": "x", **changes}
    with pytest.raises(ValidationError, match=field):
        EditRequest.model_validate(payload)


def test_edit_response_round_trips_through_json() -> None:
    response = EditResponse(
        image=PNG,
        output_format="png",
        width=16,
        height=16,
        seed=1,
        num_inference_steps=2,
        true_cfg_scale=4.0,
        negative_prompt=" ",
        worker=0,
        device="cpu",
        model=MODEL,
        timings=EditTimings(queue_wait_s=0.0, edit_s=1.0, pipeline_s=0.9, total_s=1.0),
    )
    assert EditResponse.model_validate_json(response.model_dump_json()) == response


def test_editor_info_and_error_envelope_round_trip() -> None:
    info = EditorInfo(
        version="0",
        model=MODEL,
        devices=["cpu"],
        workers=[WorkerInfo(index=0, device="cpu", state="ready", pid=1, jobs_done=0, restarts=0)],
        queue_capacity=4,
        queue_depth=0,
        max_in_flight=5,
    )
    assert EditorInfo.model_validate_json(info.model_dump_json()) == info
    error = ErrorResponse.model_validate({"error": {"type": "queue_full", "message": "busy"}})
    assert error.error.param is None


def test_a_response_with_a_field_this_client_does_not_know_still_parses() -> None:
    newer = {"type": "queue_full", "message": "busy", "retry_hint": "later"}
    assert ErrorResponse.model_validate({"error": newer}).error.type == "queue_full"
