"""Editor HTTP routes: thin. Validate, reserve a queue slot, submit, shape the answer."""

from __future__ import annotations

import asyncio
import functools
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from editor_service import __version__
from editor_service.backends.base import EditJob
from editor_service.codecs import decode_to_rgb, encode_rgb, inspect_source
from editor_service.config import EditorSettings
from editor_service.families.wire import check_input_count, check_parameters, family_info
from editor_service.pool import EditResult, WorkerPool
from service_kit.app.state import DecodeGateDep, hosted_dep, state_dep
from service_kit.errors import InvalidInput
from service_kit.http.disconnect import cancel_on_disconnect
from service_kit.http.json_body import json_body, json_body_openapi
from service_kit.http.json_response import json_answer
from service_kit.images.decode_gate import DecodeGate
from service_kit.models.loaded_model import model_info
from service_kit.text_safety import check_user_text
from shared_schemas import (
    EditorInfo,
    EditRequest,
    EditResponse,
    EditTimings,
    ErrorResponse,
)

router = APIRouter(prefix="/v1", tags=["edits"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 429, 500, 503, 504, 507)
}


PoolDep = Annotated[WorkerPool, hosted_dep(lambda pool: pool)]
SettingsDep = Annotated[EditorSettings, state_dep(lambda state: state.settings)]


async def _edit(
    request: Request,
    pool: WorkerPool,
    settings: EditorSettings,
    gate: DecodeGate,
    body: EditRequest,
    instruction_param: str = "instruction",
) -> tuple[EditJob, EditResult, bytes]:
    """Reserve a slot (refusals cost nothing), decode, run, encode: codecs run in threads here,
    so a worker's GPU goes straight on to its next job."""
    loaded = pool.model
    if loaded is not None:  # else the worker's backend checks (and any job waits for a model)
        texts = [(instruction_param, body.instruction), ("negative_prompt", body.negative_prompt)]
        check_user_text(texts, loaded.reserved_text)
    parameters = dict(body.parameters)
    if body.true_cfg_scale is not None:
        if "true_cfg_scale" in parameters and parameters["true_cfg_scale"] != body.true_cfg_scale:
            raise InvalidInput(
                "true_cfg_scale: given twice with different values (field and parameters)",
                param="true_cfg_scale",
            )
        parameters["true_cfg_scale"] = body.true_cfg_scale
    check_parameters(
        loaded,
        num_inference_steps=body.num_inference_steps,
        parameters=parameters,
        width=body.width,
        height=body.height,
    )
    check_input_count(loaded, len(body.input_images), param="images")
    async with pool.reserve() as slot:
        pixels = [
            await gate.decode(
                functools.partial(inspect_source, data, settings.max_image_pixels, param),
                functools.partial(decode_to_rgb, data, settings.max_image_pixels, param),
            )
            for data, param in zip(body.input_images, _input_params(body), strict=True)
        ]
        job = EditJob(
            job_id=pool.new_job_id(),
            image=pixels[0],
            more_images=tuple(pixels[1:]),
            instruction=body.instruction,
            negative_prompt=body.negative_prompt,
            num_inference_steps=body.num_inference_steps,
            true_cfg_scale=None,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**32),
            width=body.width,
            height=body.height,
            parameters=parameters,
        )
        result = await cancel_on_disconnect(request, slot.run(job))
    encoded = await asyncio.to_thread(
        encode_rgb, result.output.image, body.output_format, body.compress_level
    )
    return job, result, encoded


def _input_params(body: EditRequest) -> list[str]:
    """The request field each input image came in (errors name it)."""
    return ["image", *(f"images[{i}]" for i in range(len(body.images)))]


@router.post(
    "/edits",
    response_model=EditResponse,
    responses=ERRORS,
    openapi_extra=json_body_openapi(EditRequest),
)
async def create_edit(
    # Parsed and validated (base64 of up to six images) off the event loop, as the judge's.
    body: Annotated[EditRequest, json_body(EditRequest)],
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    gate: DecodeGateDep,
) -> Response:
    """Edit one image with one instruction."""
    job, result, encoded = await _edit(request, pool, settings, gate, body)
    output = result.output
    ran = output.parameters or job.family_parameters()
    # Megabytes of base64 and JSON: made off the event loop (service_kit.http.json_response).
    return await json_answer(
        lambda: EditResponse(
            image=encoded,
            output_format=body.output_format,
            width=result.output.image.width,
            height=result.output.image.height,
            seed=job.seed,
            num_inference_steps=output.num_inference_steps or job.num_inference_steps or 0,
            true_cfg_scale=ran.get("true_cfg_scale"),
            negative_prompt=job.negative_prompt,
            family=result.model.family,
            parameters=ran,
            worker=result.worker,
            device=result.device,
            model=model_info(result.model),
            timings=EditTimings(
                queue_wait_s=result.queue_wait_s,
                edit_s=result.edit_s,
                pipeline_s=result.output.pipeline_s,
                total_s=result.total_s,
            ),
        )
    )


@router.get("/info", response_model=EditorInfo, tags=["service"])
async def info(pool: PoolDep, settings: SettingsDep) -> EditorInfo:
    """The model, devices, workers and queue."""
    loaded = pool.model
    workers = pool.worker_infos()
    return EditorInfo(
        version=__version__,
        model=model_info(loaded) if loaded else None,
        family=family_info(loaded),
        devices=[w.device for w in workers],
        workers=workers,
        queue_capacity=settings.queue_capacity,
        queue_depth=pool.queue_depth,
        max_in_flight=len(workers) + settings.queue_capacity,
        model_state=pool.model_state(),
        client_in_flight=pool.queue.client_in_flight(),
    )
