"""Editor HTTP routes: thin. Validate, reserve a queue slot, submit, shape the answer."""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import ValidationError

from editor_service import __version__
from editor_service.backends.base import EditJob, LoadedModel
from editor_service.codecs import decode_to_rgb, encode_rgb, inspect_source
from editor_service.config import EditorSettings
from editor_service.pool import EditResult, WorkerPool
from service_kit.decoding import DecodeGate
from service_kit.disconnect import cancel_on_disconnect
from service_kit.errors import (
    InvalidImage,
    InvalidInput,
    UnsupportedMediaType,
    validation_message,
)
from service_kit.responses import json_response
from service_kit.text_safety import check_user_text
from shared_schemas import (
    EditorInfo,
    EditRequest,
    EditResponse,
    EditTimings,
    ErrorResponse,
    ModelInfo,
    ModelStateResponse,
    OpenAIImage,
    OpenAIImagesResponse,
    sniff_format,
)
from shared_schemas.images import encode_image_b64

router = APIRouter(prefix="/v1", tags=["edits"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 429, 500, 503, 504, 507)
}


def get_pool(request: Request) -> WorkerPool:
    pool: WorkerPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> EditorSettings:
    settings: EditorSettings = request.app.state.settings
    return settings


PoolDep = Annotated[WorkerPool, Depends(get_pool)]
SettingsDep = Annotated[EditorSettings, Depends(get_settings)]


def model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(
        id=model.id,
        source=model.source,
        revision=model.revision,
        model_class=model.model_class,
        dtype=model.dtype,
        meaningful=model.meaningful,
        options=dict(model.details),
        deterministic=model.details.get("deterministic") is True,
    )


async def _edit(
    request: Request,
    pool: WorkerPool,
    settings: EditorSettings,
    body: EditRequest,
    instruction_param: str = "instruction",
) -> tuple[EditJob, EditResult, bytes]:
    """Reserve a slot (refusals cost nothing), decode, run, encode: codecs run in threads here,
    so a worker's GPU goes straight on to its next job."""
    loaded = pool.loaded_model()
    if loaded is not None:  # else the worker's backend checks (and any job waits for a model)
        texts = [(instruction_param, body.instruction), ("negative_prompt", body.negative_prompt)]
        check_user_text(texts, loaded.reserved_text)
    async with pool.reserve() as slot:
        gate: DecodeGate = request.app.state.decode_gate
        pixels = await gate.decode(
            functools.partial(inspect_source, body.image, settings.max_image_pixels),
            functools.partial(decode_to_rgb, body.image, settings.max_image_pixels),
        )
        job = EditJob(
            job_id=pool.new_job_id(),
            image=pixels,
            instruction=body.instruction,
            negative_prompt=body.negative_prompt,
            num_inference_steps=body.num_inference_steps,
            true_cfg_scale=body.true_cfg_scale,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**32),
            width=body.width,
            height=body.height,
        )
        result = await cancel_on_disconnect(request, slot.run(job))
    encoded = await asyncio.to_thread(
        encode_rgb, result.output.image, body.output_format, body.compress_level
    )
    return job, result, encoded


@router.post("/edits", response_model=EditResponse, responses=ERRORS)
async def create_edit(
    body: EditRequest, request: Request, pool: PoolDep, settings: SettingsDep
) -> Response:
    """Edit one image with one instruction."""
    job, result, encoded = await _edit(request, pool, settings, body)
    answer = EditResponse(
        image=encoded,
        output_format=body.output_format,
        width=result.output.image.width,
        height=result.output.image.height,
        seed=job.seed,
        num_inference_steps=job.num_inference_steps,
        true_cfg_scale=job.true_cfg_scale,
        negative_prompt=job.negative_prompt,
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
    return json_response(answer)


@router.post(
    "/images/edits",
    response_model=OpenAIImagesResponse,
    responses=ERRORS,
    summary="Edit an image (OpenAI images API form)",
)
async def create_openai_edit(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="The image to edit (PNG, JPEG or WebP).")],
    prompt: Annotated[str, Form(description="The edit instruction.")],
    n: Annotated[int, Form(ge=1, le=1, description="Only 1 is supported.")] = 1,  # noqa: ARG001
    size: Annotated[str, Form(description="WIDTHxHEIGHT, or auto.")] = "auto",
    response_format: Annotated[str, Form(description="Only b64_json is supported.")] = "b64_json",
    model: Annotated[str | None, Form(description="Ignored: one model is served.")] = None,  # noqa: ARG001
    negative_prompt: Annotated[str, Form()] = " ",
    num_inference_steps: Annotated[int, Form()] = 50,
    true_cfg_scale: Annotated[float, Form()] = 4.0,
    seed: Annotated[int | None, Form()] = None,
    output_format: Annotated[str, Form()] = "png",
    compress_level: Annotated[int, Form()] = 1,
) -> Response:
    """Multipart image + prompt, answered with ``data[0].b64_json``: OpenAI clients and curl -F."""
    if response_format != "b64_json":
        raise UnsupportedMediaType(
            "only response_format=b64_json is supported", param="response_format"
        )
    width, height = _parse_size(size)
    data = await image.read()
    if sniff_format(data) is None:
        raise InvalidImage("image is not a PNG, JPEG or WebP file", param="image")
    try:
        body = EditRequest(
            image=data,
            instruction=prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=num_inference_steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            width=width,
            height=height,
            output_format=output_format,
            compress_level=compress_level,
        )
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise InvalidInput(message, param=param) from None
    _, _, encoded = await _edit(request, pool, settings, body, instruction_param="prompt")
    answer = OpenAIImagesResponse(
        created=int(time.time()), data=[OpenAIImage(b64_json=encode_image_b64(encoded))]
    )
    return json_response(answer)


_SIZE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})", re.ASCII)


def _parse_size(size: str) -> tuple[int | None, int | None]:
    if size == "auto":
        return None, None
    # ASCII digits, a few of them: str.isdigit() also takes "٣٢", and int() of thousands of
    # digits raises ValueError (a 500); the range itself is EditRequest's to check.
    found = _SIZE.fullmatch(size.lower())
    if found is None:
        raise InvalidInput("size must be WIDTHxHEIGHT (e.g. 1024x1024) or auto", param="size")
    return int(found.group(1)), int(found.group(2))


@router.post("/model/release", response_model=ModelStateResponse, responses=ERRORS, tags=["model"])
async def release_model(pool: PoolDep) -> ModelStateResponse:
    """Free the GPU memory of every worker (after running jobs finish), e.g. for the judge."""
    seconds = await pool.release()
    return ModelStateResponse(action="release", seconds=seconds, loaded=pool.loaded)


@router.post("/model/load", response_model=ModelStateResponse, responses=ERRORS, tags=["model"])
async def load_model(pool: PoolDep) -> ModelStateResponse:
    """Load the model onto every worker's device again; answers once all are serving."""
    seconds = await pool.load()
    return ModelStateResponse(action="load", seconds=seconds, loaded=pool.loaded)


@router.get("/info", response_model=EditorInfo, tags=["service"])
async def info(pool: PoolDep, settings: SettingsDep) -> EditorInfo:
    """The model, devices, workers and queue."""
    loaded = pool.loaded_model()
    workers = pool.worker_infos()
    return EditorInfo(
        version=__version__,
        model=model_info(loaded) if loaded else None,
        devices=[w.device for w in workers],
        workers=workers,
        queue_capacity=settings.queue_capacity,
        queue_depth=pool.queue_depth,
        max_in_flight=len(workers) + settings.queue_capacity,
    )
