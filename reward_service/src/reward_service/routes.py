"""Reward HTTP routes: thin. Validate, reserve queue slots, submit, shape the answer."""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from reward_service import __version__
from reward_service.config import RewardSettings
from reward_service.judge import Judge
from reward_service.metrics import RewardMetrics
from reward_service.protocols import ProtocolRegistry, canonical_document
from reward_service.scorer import (
    assemble,
    build_items,
    check_images,
    decode_items,
    inspect_items,
    record,
    user_text,
)
from service_kit.app.state import DecodeGateDep, hosted_dep, state_dep
from service_kit.errors import InvalidInput, NotFound
from service_kit.http.disconnect import cancel_on_disconnect
from service_kit.http.json_body import json_body, json_body_openapi
from service_kit.models.loaded_model import model_info
from service_kit.text_safety import check_user_text
from shared_schemas import (
    ErrorResponse,
    ProtocolDefinition,
    ProtocolsResponse,
    RewardInfo,
    ScoreRequest,
    ScoreResponse,
    TokenUsage,
)
from shared_schemas.scores import SCORE_MODES

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 500, 502, 503, 504, 507)
}
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


# The judge is the app's dispatch; the protocols, settings and metrics are the app's state
# (reward_service.app.RewardState).
JudgeDep = Annotated[Judge, hosted_dep(lambda judge: judge)]
ProtocolsDep = Annotated[ProtocolRegistry, state_dep(lambda state: state.protocols)]
SettingsDep = Annotated[RewardSettings, state_dep(lambda state: state.settings)]
MetricsDep = Annotated[RewardMetrics, state_dep(lambda state: state.metrics)]


def request_id(request: Request) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    return given if _CLIENT_REQUEST_ID.match(given) else f"req-{uuid.uuid4().hex[:12]}"


@router.post(
    "/scores",
    response_model=ScoreResponse,
    responses=ERRORS,
    tags=["scores"],
    openapi_extra=json_body_openapi(ScoreRequest),
)
async def create_scores(
    body: Annotated[ScoreRequest, json_body(ScoreRequest)],
    request: Request,
    response: Response,
    judge: JudgeDep,
    protocols: ProtocolsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: DecodeGateDep,
) -> ScoreResponse:
    """Score edited images with a judge protocol; one result per item, in order."""
    accepted_at = time.monotonic()
    rid = request_id(request)
    response.headers["X-Request-ID"] = rid
    protocol = protocols.get(body.protocol)
    if body.mode not in protocol.spec.modes:
        raise InvalidInput(
            f"protocol {protocol.name!r} is generate-only (its answers carry several scores, "
            "or it asks for no bare number): use mode 'generate'",
            param="mode",
        )
    model = judge.ensure_ready()
    if body.mode not in model.modes:
        raise InvalidInput(
            f"mode {body.mode!r} is not supported by this judge (it supports "
            f"{', '.join(model.modes)}): the endpoint returns no log-probabilities",
            param="mode",
        )
    check_user_text(user_text(body.items), model.reserved_text)
    check_images(protocol, body)
    async with judge.queue.reserve(len(body.items)) as slot:
        # Decoding off the event loop, after the slot is held: a refused request costs nothing,
        # and a bad image is refused with a 4xx before it reaches the model.
        images = await gate.decode(
            functools.partial(inspect_items, body.items, settings.max_image_pixels),
            functools.partial(
                decode_items, body.items, settings.max_image_pixels, settings.judge_image_pixels
            ),
        )
        items = build_items(protocol, body, images, rid)
        completed = await cancel_on_disconnect(request, slot.submit(items, label=rid))
    results = assemble(protocol, body, completed, accepted_at, model.deterministic)
    record(metrics, body, results)
    logger.info(
        "request %s: %d items, %s/%s, %d unscored, %.2fs",
        rid,
        len(results),
        protocol.name,
        body.mode,
        sum(not r.scored for r in results),
        time.monotonic() - accepted_at,
    )
    usage = TokenUsage.total([q.usage for r in results for q in r.questions])
    return ScoreResponse(results=results, model=model_info(model), usage=usage)


@router.get("/protocols", response_model=ProtocolsResponse, tags=["protocols"])
async def list_protocols(protocols: ProtocolsDep) -> ProtocolsResponse:
    """Every protocol this service offers, with its hash."""
    return ProtocolsResponse(protocols=[p.info() for p in protocols])


@router.get(
    "/protocols/{name}",
    response_model=ProtocolDefinition,
    responses={**ERRORS, 404: {"model": ErrorResponse}},
    tags=["protocols"],
)
async def get_protocol(name: str, protocols: ProtocolsDep) -> ProtocolDefinition:
    """One protocol's full definition (its prompts); its hash is the sha256 of this document."""
    protocol = protocols.find(name)
    if protocol is None:
        raise NotFound(f"no protocol named {name!r}; see GET /v1/protocols", param="name")
    return ProtocolDefinition(info=protocol.info(), definition=canonical_document(protocol.spec))


@router.get("/info", response_model=RewardInfo, tags=["service"])
async def info(judge: JudgeDep, protocols: ProtocolsDep, settings: SettingsDep) -> RewardInfo:
    """The judge model, device, batching limits and queue."""
    return RewardInfo(
        version=__version__,
        model=model_info(judge.model) if judge.model is not None else None,
        devices=judge.devices,
        max_batch_images=settings.max_batch_images,
        max_wait_s=settings.max_wait_s,
        judge_image_pixels=settings.judge_image_pixels,
        queue_capacity=settings.queue_capacity,
        queue_depth=judge.queue.depth,
        protocols=protocols.names,
        modes=list(judge.model.modes if judge.model is not None else SCORE_MODES),
        model_state=judge.model_state(),
        batches_out=judge.queue.batches_out,
        client_in_flight={
            name: judge.queue.client_in_flight(protocols.get(name).info().images_per_item)
            for name in protocols.names
        },
    )
