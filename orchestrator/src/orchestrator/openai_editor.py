"""A served editor behind OpenAI's images-edit route (``--editor-api openai``).

The URL is the base URL as the official SDK takes it (``http://host:port/v1``); an edit is
``POST {base}/images/edits`` as multipart: the image file (an item's several inputs as
``image[]`` parts, as the SDK sends a list), ``prompt``, ``model``, ``n=1`` and
``output_format=png`` always; ``size``, ``seed``, ``num_inference_steps``, ``true_cfg_scale``,
``negative_prompt`` and the family parameters (``guidance_scale``...) only when the run sets
them, as the engines take them as extra form fields (SGLang diffusion, vLLM-Omni; OpenAI's own
API refuses what it does not know, so leave them unset there: ``--seed-policy random``). The
answer's ``data[0].b64_json`` is the edit; ``usage`` is kept where the endpoint reports it.
The model is the one named in the settings, else the first of ``GET {base}/models``.

Errors are read from the shapes these engines answer with (OpenAI's and vLLM's
``{"error": {"message", ...}}``, SGLang's FastAPI ``{"detail": ...}``, a bare ``{"message"}``),
so a refused item is recorded with the endpoint's own words; statuses keep their meaning for
retrying (429/5xx/timeouts, with Retry-After). The key travels in the Authorization header only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from typing import Any

import httpx
from PIL import Image

from orchestrator.clients import (
    EditorClient,
    InvalidResponse,
    ServiceCallError,
    ServiceUnreachable,
    parse_retry_after,
)
from shared_schemas import (
    EditorInfo,
    EditRequest,
    EditResponse,
    EditTimings,
    ModelInfo,
    ReadyResponse,
    sniff_format,
)

# Requests kept in flight against one served editor (its own queue does the rest).
DEFAULT_IN_FLIGHT = 4


def image_parts(images: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The form's image files: one as ``image``; several as ``image[]`` parts in order, as the
    official SDK sends a list (``images.edit(image=[...])``)."""
    key = "image" if len(images) == 1 else "image[]"
    parts = []
    for index, data in enumerate(images):
        kind = sniff_format(data) or "png"
        name = "source" if index == 0 else f"input_{index + 1}"
        parts.append((key, (f"{name}.{kind}", data, f"image/{kind}")))
    return parts


class OpenAIEditResponse(EditResponse):
    """Our edit answer, plus what an OpenAI-compatible endpoint reports about cost."""

    # What the endpoint does not say is not invented: no seed, no step count.
    seed: int | None  # type: ignore[assignment]
    num_inference_steps: int | None  # type: ignore[assignment]
    usage: dict[str, Any] | None = None
    sent: dict[str, str] = {}  # the form fields sent besides the image and the prompt


def endpoint_message(response: httpx.Response) -> str:
    """The endpoint's own explanation of a non-2xx answer, whatever its error shape."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    message: object = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        message = message or body.get("message") or body.get("detail")
        if isinstance(message, dict | list):
            message = json.dumps(message)[:300]
    if not message:
        message = response.text.strip()[:300] or response.reason_phrase
    return f"HTTP {response.status_code}: {str(message)[:500]}"


class OpenAIEditorClient(EditorClient):
    """An EditorClient over an OpenAI-compatible ``/v1/images/edits``: the phases, pooling,
    retries and records work as with our own editor."""

    service = "editor"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(http, base_url, api_key)
        self.model = model

    async def _call(
        self, method: str, path: str, *, timeout: httpx.Timeout | None = None, **kwargs: Any
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = await self.http.request(
                method,
                url,
                headers=self._headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise ServiceUnreachable(
                self.service,
                f"{type(exc).__name__} on {method} {url}: {exc}".rstrip(": "),
                error_type="timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable",
            ) from exc
        if not response.is_success:
            raise ServiceCallError(
                self.service,
                endpoint_message(response),
                status=response.status_code,
                error_type="endpoint_error",
                retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            )
        return response

    async def _served_model(self) -> str:
        if self.model is not None:
            return self.model
        response = await self._call("GET", "/models", timeout=httpx.Timeout(30.0))
        try:
            body = response.json()
            listed = body.get("data") or []
            found = listed[0]["id"] if listed else body.get("model_path") or body.get("id")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            found = None
        if not isinstance(found, str) or not found:
            raise InvalidResponse(
                self.service,
                f"GET {self.base_url}/models names no model; give one with --editor-model",
                error_type="invalid_response",
            )
        self.model = found
        return found

    async def ready(self) -> ReadyResponse:
        await self._served_model()
        return ReadyResponse(ready=True, detail="answers", workers_ready=1, workers_total=1)

    async def info(self) -> EditorInfo:
        model = await self._served_model()
        return EditorInfo(
            version="openai-compatible",
            model=ModelInfo(
                id=model,
                source="endpoint",
                model_class="openai-images-edit",
                dtype="unknown",
                meaningful=True,
                options={"api": "openai"},
            ),
            devices=[],
            workers=[],
            queue_capacity=0,
            queue_depth=0,
            max_in_flight=DEFAULT_IN_FLIGHT,
        )

    @staticmethod
    def form(request: EditRequest, model: str) -> dict[str, str]:
        """The form fields sent for ``request`` (what provenance records as sent)."""
        fields = {"prompt": request.instruction, "model": model, "n": "1"}
        fields["output_format"] = request.output_format
        if request.width is not None and request.height is not None:
            fields["size"] = f"{request.width}x{request.height}"
        if request.seed is not None:
            fields["seed"] = str(request.seed)
        if request.num_inference_steps is not None:
            fields["num_inference_steps"] = str(request.num_inference_steps)
        if request.true_cfg_scale is not None:
            fields["true_cfg_scale"] = repr(request.true_cfg_scale)
        if request.negative_prompt.strip():
            fields["negative_prompt"] = request.negative_prompt
        for name, value in request.parameters.items():
            fields[name] = repr(value)
        return fields

    async def edit(self, request: EditRequest) -> EditResponse:
        model = await self._served_model()
        fields = self.form(request, model)
        started = time.perf_counter()
        response = await self._call(
            "POST", "/images/edits", data=fields, files=image_parts(request.input_images)
        )
        elapsed = time.perf_counter() - started
        try:
            body = response.json()
            image = base64.b64decode(body["data"][0]["b64_json"], validate=True)
            with Image.open(io.BytesIO(image)) as opened:
                width, height = opened.size
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error, OSError) as exc:
            raise InvalidResponse(
                self.service,
                f"POST {self.base_url}/images/edits answered without a decodable "
                f"data[0].b64_json image ({type(exc).__name__})",
                status=response.status_code,
                error_type="invalid_response",
            ) from exc
        image_format = sniff_format(image)
        if image_format is None:
            raise InvalidResponse(
                self.service,
                "the edited image is not PNG, JPEG or WebP",
                status=response.status_code,
                error_type="invalid_response",
            )
        usage = body.get("usage")
        return OpenAIEditResponse(
            image=image,
            output_format=image_format,
            width=width,
            height=height,
            seed=request.seed,
            num_inference_steps=request.num_inference_steps,
            true_cfg_scale=request.true_cfg_scale,
            negative_prompt=request.negative_prompt,
            parameters=dict(request.parameters),
            worker=0,
            device="endpoint",
            model=(await self.info()).model,
            timings=EditTimings(
                queue_wait_s=0.0, edit_s=elapsed, pipeline_s=elapsed, total_s=elapsed
            ),
            usage=usage if isinstance(usage, dict) else None,
            sent={k: v for k, v in fields.items() if k != "prompt"},
        )
