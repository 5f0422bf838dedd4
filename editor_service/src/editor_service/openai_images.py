"""POST /v1/images/edits: OpenAI's images-edit form, as the official SDK sends it.

Every field the SDK can send is honoured or refused with a 400 naming it; none that changes the
output is dropped. ``image`` or ``image[]`` (several go to a multi-image Edit Plus model),
``mask`` (an inpainting edit where the model has one), ``n`` images from n seeds, and
``stream=true`` answered as server-sent events (one ``image_edit.completed`` per image). The
README's table says what each field does here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from editor_service.backends.base import EditJob, LoadedModel, RGBImage
from editor_service.codecs import SOURCE_PIXELS, encode_rgb
from editor_service.families.wire import (
    check_input_count,
    check_parameters,
    input_fidelity_refusal,
    loaded_family,
    no_inpainting_message,
)
from editor_service.pool import EditResult, Reservation
from editor_service.routes import PoolDep, SettingsDep
from service_kit.app.state import DecodeGateDep
from service_kit.errors import InvalidImage, InvalidInput, validation_message
from service_kit.http.disconnect import cancel_on_disconnect
from service_kit.http.json_response import json_answer, off_loop
from service_kit.images.decode_gate import DecodeGate
from service_kit.images.decoding import decode_image, read_header
from service_kit.models.loaded_model import model_info
from service_kit.text_safety import check_user_text
from shared_schemas import (
    EditTimings,
    ErrorResponse,
    OpenAIImage,
    OpenAIImagesResponse,
    OpenAIModel,
    OpenAIModelList,
)
from shared_schemas.edits import MAX_PARAMETER_NAME, MAX_SEED, MAX_SIDE, SIZE_MULTIPLE
from shared_schemas.images import encode_image_b64
from shared_schemas.openai_images import OpenAIImageEditCompleted, OpenAIImageEditForm

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["edits"])

MAX_FORM_FILES = 8
# Fields of the SDK's images.edit this service cannot honour at all (others are refused by value).
UNSUPPORTED = {
    "complexity": "complexity is a setting of OpenAI's image models; this editor has none",
    "frame_count": "animated output is not supported",
    "frame_duration_ms": "animated output is not supported",
    "svg": "SVG output is not supported",
    "markup": "markup images are not supported",
}
# Clearer words than pydantic's for the values a field refuses.
REFUSED_VALUE = {
    "response_format": "only b64_json is supported (this service keeps no image URLs)",
    "output_format": "must be png, jpeg or webp",
    "background": "only auto or opaque: the model makes opaque images, never transparent ones",
    "quality": "only auto: there are no quality tiers here; num_inference_steps trades time "
    "for quality",
    "partial_images": "only 0: partial images are not streamed (stream=true sends one "
    "image_edit.completed event per image)",
}
_SIZE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})", re.ASCII)
_FILE_FIELDS = ("image", "image[]", "mask")


def _form_schema() -> dict[str, object]:
    """The form's OpenAPI schema: the text fields, and the files (image, or image[] for
    several; mask)."""
    schema = OpenAIImageEditForm.model_json_schema()
    binary = {"type": "string", "format": "binary"}
    schema["properties"] = {"image": binary, "mask": binary, **schema["properties"]}
    schema["required"] = ["image", *schema.get("required", [])]
    schema["title"] = "OpenAIImageEditForm"
    return schema


@dataclass(frozen=True, slots=True)
class _Files:
    images: list[bytes]
    mask: bytes | None


@router.post(
    "/images/edits",
    response_model=OpenAIImagesResponse,
    responses={
        **{code: {"model": ErrorResponse} for code in (400, 413, 415, 429, 503, 504, 507)},
        200: {"content": {"text/event-stream": {}}},
    },
    summary="Edit an image (OpenAI images API form, as the official SDK sends it)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _form_schema()}},
        }
    },
)
async def create_openai_edit(
    request: Request, pool: PoolDep, settings: SettingsDep, gate: DecodeGateDep
) -> Response:
    """Multipart ``image`` (or ``image[]``) + ``prompt`` and the SDK's options; answered with
    ``data[i].b64_json``, or as server-sent events with ``stream=true``."""
    form = await _read_form(request)
    try:
        fields, files = await _split(form)
    finally:
        await form.close()  # the uploads' spooled files, read by now
    model = pool.model
    body, parameters = _validate(fields, model)
    width, height = parse_size(body.size)
    _check_against_model(body, files, model, width)
    check_parameters(
        model,
        num_inference_steps=body.num_inference_steps,
        parameters=parameters,
        width=width,
        height=height,
    )
    if model is not None:  # else the worker's backend checks
        texts = [("prompt", body.prompt), ("negative_prompt", body.negative_prompt)]
        check_user_text(texts, model.reserved_text)
    quality = _encoder_quality(body)
    base_seed = body.seed if body.seed is not None else None
    seeds = [
        (base_seed + i) % (MAX_SEED + 1) if base_seed is not None else secrets.randbelow(2**32)
        for i in range(body.n)
    ]
    if body.user or body.safety_identifier:
        logger.info("images/edits for user %s", body.safety_identifier or body.user)

    async def one(slot: Reservation, decoded: _Decoded, seed: int) -> EditResult:
        job = EditJob(
            job_id=pool.new_job_id(),
            image=decoded.images[0],
            instruction=body.prompt,
            negative_prompt=body.negative_prompt,
            num_inference_steps=body.num_inference_steps,
            true_cfg_scale=None,
            seed=seed,
            width=width,
            height=height,
            more_images=tuple(decoded.images[1:]),
            mask=decoded.mask,
            parameters=parameters,
            instruction_param="prompt",
        )
        return await cancel_on_disconnect(request, slot.run(job))

    async with contextlib.AsyncExitStack() as stack:
        # Every slot first (a full queue refuses before any decoding), then decode, then run.
        slots = [await stack.enter_async_context(pool.reserve()) for _ in seeds]
        decoded = await _decode(gate, files, settings.max_image_pixels)
        async with asyncio.TaskGroup() as group:  # one failing cancels the others
            tasks = [
                group.create_task(one(slot, decoded, seed))
                for slot, seed in zip(slots, seeds, strict=True)
            ]
    results = [task.result() for task in tasks]
    encoded = await asyncio.gather(
        *(
            asyncio.to_thread(
                encode_rgb, r.output.image, body.output_format, body.compress_level, quality
            )
            for r in results
        )
    )
    made = list(zip(results, encoded, strict=True))
    first = made[0][0].output.image
    size = f"{first.width}x{first.height}"
    created = int(time.time())
    # Megabytes of base64, JSON and event framing: made off the event loop, so that every other
    # client (/health included) is served meanwhile (service_kit.http.json_response).
    if body.stream:
        events = await off_loop(lambda: _event_stream(made, body, size, created, seeds))
        return Response(events, media_type="text/event-stream", headers=_seed_header(seeds))
    return await json_answer(
        lambda: _answer(made, body, size, created, seeds), headers=_seed_header(seeds)
    )


def _answer(
    made: list[tuple[EditResult, bytes]],
    body: OpenAIImageEditForm,
    size: str,
    created: int,
    seeds: list[int],
) -> OpenAIImagesResponse:
    return OpenAIImagesResponse(
        created=created,
        data=[
            OpenAIImage(
                b64_json=encode_image_b64(encoded),
                seed=seed,
                timings=EditTimings(
                    queue_wait_s=result.queue_wait_s,
                    edit_s=result.edit_s,
                    pipeline_s=result.output.pipeline_s,
                    total_s=result.total_s,
                ),
            )
            for (result, encoded), seed in zip(made, seeds, strict=True)
        ],
        model=model_info(made[0][0].model),
        background="opaque",
        output_format=body.output_format,
        quality="auto",
        size=size,
    )


def _seed_header(seeds: list[int]) -> dict[str, str]:
    """The seeds in a header too, for clients that keep only the images (curl -i shows it)."""
    return {"X-Editbench-Seeds": ",".join(str(seed) for seed in seeds)}


@router.get("/models", response_model=OpenAIModelList, tags=["service"])
async def list_models(pool: PoolDep) -> OpenAIModelList:
    """The served model in OpenAI's list shape (empty until it has loaded), for OpenAI clients."""
    model = pool.model
    return OpenAIModelList(data=[OpenAIModel(id=model.id)] if model is not None else [])


async def _read_form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidInput(
            "send a multipart form (image, prompt, ...), as the OpenAI SDK and curl -F do",
            param="image",
        )
    try:
        return await request.form(max_files=MAX_FORM_FILES, max_fields=64)
    except Exception as exc:  # starlette's MultiPartException, or a malformed body
        raise InvalidInput(f"the form could not be read: {exc}"[:300]) from None


async def _split(form: FormData) -> tuple[dict[str, str], _Files]:
    """Text fields (each once) and the files, or a 400 naming the field at fault."""
    fields: dict[str, str] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    for key, value in form.multi_items():
        if key in UNSUPPORTED:
            raise InvalidInput(f"{key}: {UNSUPPORTED[key]}", param=key)
        if isinstance(value, UploadFile):
            if key not in _FILE_FIELDS:
                raise InvalidInput(f"{key}: unexpected file field", param=key)
            data = await value.read()
            if key == "mask":
                if mask is not None:
                    raise InvalidInput("mask: give one mask", param="mask")
                mask = data
            else:
                images.append(data)
            continue
        if key in _FILE_FIELDS:
            raise InvalidInput(f"{key}: must be a file (multipart upload)", param=key)
        if key in fields:
            raise InvalidInput(f"{key}: given more than once", param=key)
        fields[key] = value
    if not images:
        raise InvalidInput("image: required (a PNG, JPEG or WebP file)", param="image")
    return fields, _Files(images, mask)


def _validate(
    fields: dict[str, str], model: LoadedModel | None
) -> tuple[OpenAIImageEditForm, dict[str, float]]:
    """The form, and the family parameters among its fields (any other numeric field, such as
    guidance_scale; checked against the loaded family by the caller). A refusal that depends
    on the model names the loaded family."""
    known = {k: v for k, v in fields.items() if k in OpenAIImageEditForm.model_fields}
    parameters: dict[str, float] = {}
    for name, text in fields.items():
        if name in known:
            continue
        value = _number(text)
        if value is None or len(name) > MAX_PARAMETER_NAME:
            short = name[:MAX_PARAMETER_NAME]
            raise InvalidInput(
                f"{short}: not a parameter of this service's images/edits", param=short
            )
        parameters[name] = value
    if len(parameters) > 16:
        raise InvalidInput("too many model parameters (16 at most)", param=next(iter(parameters)))
    try:
        body = OpenAIImageEditForm.model_validate(known)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        if param in REFUSED_VALUE:
            message = f"{param}: {REFUSED_VALUE[param]}"
        elif param == "input_fidelity":
            message = f"{param}: {input_fidelity_refusal(model)}"
        raise InvalidInput(message, param=param) from None
    if body.true_cfg_scale is not None:
        parameters["true_cfg_scale"] = body.true_cfg_scale
    return body, parameters


def _number(text: str) -> float | None:
    """A finite number written plainly (a few characters), else None."""
    if len(text) > 32:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_size(size: str) -> tuple[int | None, int | None]:
    if size == "auto":
        return None, None
    # ASCII digits, a few of them: str.isdigit() also takes "٣٢", and int() of thousands of
    # digits is slow; the range is checked here so the error names size.
    found = _SIZE.fullmatch(size.lower())
    if found is None:
        raise InvalidInput("size: must be WIDTHxHEIGHT (e.g. 1024x1024) or auto", param="size")
    width, height = int(found.group(1)), int(found.group(2))
    for side in (width, height):
        if side % SIZE_MULTIPLE or not SIZE_MULTIPLE <= side <= MAX_SIDE:
            raise InvalidInput(
                f"size: {width}x{height} is not possible; each side must be a multiple of "
                f"{SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIDE} (or size=auto)",
                param="size",
            )
    return width, height


def _check_against_model(
    body: OpenAIImageEditForm, files: _Files, model: LoadedModel | None, width: int | None
) -> None:
    """What depends on the served model (when it is known; else the edit gets its 503)."""
    if model is None:
        return
    if body.model is not None and body.model != model.id:
        raise InvalidInput(
            f"model: this service serves {model.id!r}, not {body.model!r} (or leave model out)",
            param="model",
        )
    check_input_count(model, len(files.images), param="image")
    if files.mask is not None:
        if not model.inpainting:
            raise InvalidInput(
                no_inpainting_message(model.id, loaded_family(model), model.model_class),
                param="mask",
            )
        if len(files.images) > 1:
            raise InvalidInput("mask: a mask goes with one image", param="mask")
        if width is not None:
            raise InvalidInput(
                "size: with a mask the output is ~1 MP at the image's aspect (the inpainting "
                "pipeline's own size); use size=auto",
                param="size",
            )


def _encoder_quality(body: OpenAIImageEditForm) -> int | None:
    if body.output_compression is None:
        return None
    if body.output_format == "png":
        raise InvalidInput(
            "output_compression: applies to jpeg and webp; png is lossless (compress_level "
            "sets its zlib level)",
            param="output_compression",
        )
    return body.output_compression


@dataclass(frozen=True, slots=True)
class _Decoded:
    images: list[RGBImage]
    mask: RGBImage | None


async def _decode(gate: DecodeGate, files: _Files, max_pixels: int) -> _Decoded:
    """Every image (through the decode gate, errors naming the field), then the mask."""
    images = []
    for i, data in enumerate(files.images):
        param = "image" if len(files.images) == 1 else f"image[{i}]"
        images.append(
            await gate.decode(
                functools.partial(_decode_cost, data, max_pixels, param),
                functools.partial(_decode_rgb, data, max_pixels, param),
            )
        )
    mask = None
    if files.mask is not None:
        source = read_header(files.images[0], max_pixels=max_pixels)
        mask = await gate.decode(
            functools.partial(_decode_cost, files.mask, max_pixels, "mask"),
            functools.partial(
                decode_mask, files.mask, max_pixels, (source.width, source.height), images[0]
            ),
        )
    return _Decoded(images, mask)


def _decode_cost(data: bytes, max_pixels: int, param: str) -> float:
    return read_header(data, max_pixels=max_pixels, param=param).decode_cost


def _decode_rgb(data: bytes, max_pixels: int, param: str) -> RGBImage:
    """A PNG, JPEG or WebP to RGB pixels (large JPEGs at a reduced scale); errors name
    ``param``."""
    return RGBImage.from_pil(
        decode_image(data, max_pixels=max_pixels, param=param, scale_to_pixels=SOURCE_PIXELS)
    )


def decode_mask(
    data: bytes, max_pixels: int, source_size: tuple[int, int], image: RGBImage
) -> RGBImage:
    """OpenAI's mask: a PNG the source image's size whose fully transparent pixels mark where
    to edit. Returned as the pipeline's mask at the decoded image's size: white where to edit,
    black where to keep."""
    header = read_header(data, max_pixels=max_pixels, param="mask")
    if header.format != "png":
        raise InvalidImage("mask: must be a PNG with an alpha channel", param="mask")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as opened:
            opened.load()
            has_alpha = opened.mode in ("RGBA", "LA") or "transparency" in opened.info
            rgba = opened.convert("RGBA")
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage("mask: truncated or corrupt PNG", param="mask") from None
    if not has_alpha:
        raise InvalidImage(
            "mask: needs an alpha channel; its fully transparent pixels mark where to edit",
            param="mask",
        )
    if rgba.size != source_size:
        raise InvalidImage(
            f"mask: is {rgba.width}x{rgba.height}; it must be the image's size "
            f"({source_size[0]}x{source_size[1]})",
            param="mask",
        )
    edit_here = rgba.getchannel("A").point(lambda alpha: 255 if alpha == 0 else 0)
    if edit_here.size != (image.width, image.height):  # the source was decoded scaled down
        edit_here = edit_here.resize((image.width, image.height), Image.Resampling.NEAREST)
    return RGBImage.from_pil(edit_here.convert("RGB"))


def _event_stream(
    made: list[tuple[EditResult, bytes]],
    body: OpenAIImageEditForm,
    size: str,
    created: int,
    seeds: list[int],
) -> bytes:
    """The images as server-sent events, in OpenAI's streaming shape (no partial images)."""
    events = []
    for (_, encoded), seed in zip(made, seeds, strict=True):
        event = OpenAIImageEditCompleted(
            b64_json=encode_image_b64(encoded),
            created_at=created,
            output_format=body.output_format,
            size=size,
            seed=seed,
        )
        data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
        events.append(f"event: {event.type}\ndata: {data}\n\n")
    return "".join(events).encode()
