"""A served editor behind OpenAI's images-edit route, as SGLang diffusion and vLLM-Omni answer it.

Run as a real uvicorn process (``python -m uvicorn tests.support.fake_images_api:app``), set up by
environment variables:

- FAKE_DIALECT: ``sglang`` or ``vllm-omni``: the error shape and what the answer carries.
  SGLang diffusion's routes are FastAPI ``Form``/``File`` parameters and refuse with
  ``HTTPException`` (``{"detail": "..."}``; a missing image is a 422 "Field 'image' is
  required"): sgl-project/sglang, the images router of sglang.multimodal_gen.runtime.
  entrypoints.openai (its ``edits`` route: image / image[], prompt, mask, model, n, response_format,
  size, output_format, background, user; other form fields are ignored, as FastAPI does; answers
  ``{"data": [{"b64_json", "revised_prompt"}]}``) and docs/diffusion/openai_api.md @41efe4c.
  vLLM-Omni's /v1/images/edits takes the same form plus ``num_inference_steps``,
  ``guidance_scale``, ``true_cfg_scale``, ``seed``, ``negative_prompt`` as form fields
  (docs.vllm.ai/projects/vllm-omni, serving/image_edit_api)
  and refuses in vLLM's ``{"error": {"message", "type", "param", "code"}}`` shape (a field it
  does not take is refused here, naming it); it reports ``usage`` here so that recording it is
  tested.
- FAKE_API_KEY: the Bearer key required (401 otherwise).
- FAKE_LOG: a JSONL file: one line per request (route, status, the form fields but the image).
- FAKE_REFUSE: a word; a prompt containing it is refused (400, content policy).
- FAKE_THROTTLE_FIRST=1: the first request of each prompt answers 429 with Retry-After: 0.
- FAKE_EDIT_DELAY_S: how long an edit takes.
- FAKE_EDIT_GATE: a file; every edit past the first FAKE_EDIT_GATE_AFTER (default 0) is logged
  with status "held" and waits for the file to exist (up to 60 s) before it is done, so that a
  test can act while edits are certainly in flight.
- FAKE_MODEL: the served model's id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DIALECT = os.environ.get("FAKE_DIALECT", "vllm-omni")
API_KEY = os.environ.get("FAKE_API_KEY")
LOG = Path(os.environ["FAKE_LOG"]) if os.environ.get("FAKE_LOG") else None
REFUSE = os.environ.get("FAKE_REFUSE")
THROTTLE_FIRST = os.environ.get("FAKE_THROTTLE_FIRST") == "1"
EDIT_DELAY_S = float(os.environ.get("FAKE_EDIT_DELAY_S", "0"))
MODEL = os.environ.get("FAKE_MODEL", "Qwen/Qwen-Image-Edit-2511")
EDIT_GATE = Path(os.environ["FAKE_EDIT_GATE"]) if os.environ.get("FAKE_EDIT_GATE") else None
EDIT_GATE_AFTER = int(os.environ.get("FAKE_EDIT_GATE_AFTER", "0"))
GATE_BOUND_S = 60.0
# The form fields each engine takes besides the image(s) and the mask.
FIELDS = {
    "sglang": {
        "prompt",
        "model",
        "n",
        "response_format",
        "size",
        "output_format",
        "background",
        "user",
    },
    "vllm-omni": {
        "prompt",
        "model",
        "n",
        "response_format",
        "size",
        "output_format",
        "background",
        "user",
        "seed",
        "num_inference_steps",
        "guidance_scale",
        "true_cfg_scale",
        "negative_prompt",
    },
}[DIALECT]

_lock = threading.Lock()
_seen: set[str] = set()
_let_pass = 0  # edits let through before the gate applies (one event loop: no lock needed)


def _log(entry: dict[str, Any]) -> None:
    if LOG is None:
        return
    with _lock, LOG.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def _error(status: int, message: str, param: str | None = None, **headers: str) -> JSONResponse:
    if DIALECT == "sglang":
        body: dict[str, Any] = {"detail": message}
    else:
        kind = {400: "BadRequestError", 401: "AuthenticationError", 429: "RateLimitError"}
        body = {
            "error": {
                "message": message,
                "type": kind.get(status, "InternalServerError"),
                "param": param,
                "code": status,
            }
        }
    return JSONResponse(body, status_code=status, headers=headers)


def _authorized(request: Request) -> bool:
    return API_KEY is None or request.headers.get("authorization") == f"Bearer {API_KEY}"


async def ready(request: Request) -> JSONResponse:
    """For the test harness's readiness wait (not part of either engine's API)."""
    return JSONResponse({"ready": True})


async def models(request: Request) -> JSONResponse:
    if not _authorized(request):
        return _error(401, "Invalid API key")
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


async def edits(request: Request) -> JSONResponse:
    if not _authorized(request):
        _log({"route": "edits", "status": 401})
        return _error(401, "Invalid API key")
    form = await request.form()
    fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
    images = [v for k, v in form.multi_items() if k in ("image", "image[]")]
    entry: dict[str, Any] = {"route": "edits", "fields": fields}
    # Each image part: its field name and the sha256 of its bytes, in the order sent.
    entry["images"] = [
        [k, hashlib.sha256(await v.read()).hexdigest()]
        for k, v in form.multi_items()
        if k in ("image", "image[]") and isinstance(v, UploadFile)
    ]
    for _, part in form.multi_items():
        if isinstance(part, UploadFile):
            await part.seek(0)
    if not images or not isinstance(images[0], UploadFile):
        entry["status"] = 422
        _log(entry)
        return _error(422, "Field 'image' is required", "image")
    unknown = sorted(set(fields) - FIELDS)
    entry["ignored"] = unknown if DIALECT == "sglang" else []
    if unknown and DIALECT != "sglang":  # FastAPI's Form parameters ignore other fields
        entry["status"] = 400
        _log(entry)
        return _error(400, f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    prompt = str(fields.get("prompt", ""))
    if THROTTLE_FIRST and prompt not in _seen:
        _seen.add(prompt)
        entry["status"] = 429
        _log(entry)
        return _error(429, "Too many requests, retry later", None, **{"Retry-After": "0"})
    if REFUSE and REFUSE in prompt:
        entry["status"] = 400
        _log(entry)
        return _error(400, "Your request was rejected by the content policy", "prompt")
    source = Image.open(io.BytesIO(await images[0].read())).convert("RGB")
    if "size" in fields:
        width, height = (int(side) for side in str(fields["size"]).split("x"))
        source = source.resize((width, height))
    await _pass_the_gate(entry)
    await asyncio.sleep(EDIT_DELAY_S)
    out = io.BytesIO()
    ImageOps.invert(source).save(out, format="PNG")
    answer: dict[str, Any] = {
        "created": 1767225600,
        "data": [{"b64_json": base64.b64encode(out.getvalue()).decode(), "revised_prompt": prompt}],
    }
    if DIALECT == "vllm-omni":
        answer["usage"] = {"input_tokens": 11, "output_tokens": 4096, "total_tokens": 4107}
    entry["status"] = 200
    _log(entry)
    return JSONResponse(answer)


async def _pass_the_gate(entry: dict[str, Any]) -> None:
    """Hold this edit until FAKE_EDIT_GATE exists, once FAKE_EDIT_GATE_AFTER edits have passed."""
    global _let_pass
    if EDIT_GATE is None:
        return
    if _let_pass < EDIT_GATE_AFTER:
        _let_pass += 1
        return
    _log({**entry, "status": "held"})
    deadline = time.monotonic() + GATE_BOUND_S
    while not EDIT_GATE.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


app = Starlette(
    routes=[
        Route("/ready", ready, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
    ]
)
