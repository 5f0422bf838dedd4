"""Domain errors and their one mapping to HTTP.

Pools, batchers and decoders raise these; routes never catch them. `install_exception_handlers`
turns every error, including FastAPI's validation errors and anything unexpected, into the shared
`ErrorResponse` envelope. Unexpected exceptions are logged with their traceback and answered with
a generic message: no exception text reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared_schemas import ErrorInfo, ErrorResponse, ModelState

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the errors a service answers with; subclasses fix the status and type."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # Said in the envelope where the service knows: whether the same request can succeed
        # later (e.g. a judge item that fails on its own: out of memory yes, an error no).
        self.retryable: bool | None = None

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ServiceError):
    status_code = 400
    error_type = "invalid_input"


class InvalidImage(InvalidInput):
    error_type = "invalid_image"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    error_type = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    error_type = "image_too_large"


class ImageTooComplex(PayloadTooLarge):
    """The file's structure would cost more to decode than its size allows (see
    service_kit.images.structure)."""

    error_type = "image_too_complex"


class NotFound(ServiceError):
    status_code = 404
    error_type = "not_found"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


MAX_RETRY_AFTER_S = 60.0  # the longest wait a service asks a client for (Retry-After)


class _RetryableError(ServiceError):
    """An error a client should retry later; carries Retry-After."""

    def __init__(
        self, message: str, *, retry_after_s: float = 1.0, param: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(min(self.retry_after_s, MAX_RETRY_AFTER_S))))}


class QueueFull(_RetryableError):
    status_code = 429
    error_type = "queue_full"


class NotReady(_RetryableError):
    """503: the service cannot take this now; ``model_state`` says where its model is."""

    status_code = 503
    error_type = "not_ready"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float = 1.0,
        param: str | None = None,
        model_state: ModelState | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, param=param)
        self.model_state = model_state


class WorkerDied(_RetryableError):
    status_code = 503
    error_type = "worker_died"


class DeadlineExceeded(ServiceError):
    status_code = 504
    error_type = "deadline_exceeded"


class OutOfMemory(_RetryableError):
    status_code = 507
    error_type = "out_of_memory"


class ClientDisconnected(ServiceError):
    """The client went away before its answer; its work was cancelled.

    Answered with nginx's 499, which nobody receives: the status exists for the access log and
    the request metrics, so a client's time-out is not logged as a server error.
    """

    status_code = 499
    error_type = "client_closed_request"


class BackendError(ServiceError):
    status_code = 500
    error_type = "backend_error"


class UpstreamError(ServiceError):
    """A service we depend on (a remote judge endpoint) refused us: not the client's fault."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamUnavailable(_RetryableError):
    """A service we depend on is overloaded or unreachable, after our own retries."""

    status_code = 503
    error_type = "upstream_unavailable"


# How a worker reports work that failed: a kind and a message, never an exception object.
FailureKind = Literal[
    "invalid_input",
    "out_of_memory",
    "cancelled",
    "backend_error",
    "endpoint_unavailable",
    "endpoint_refused",
]


def worker_failure(kind: FailureKind, message: str, param: str | None = None) -> ServiceError:
    """The error a client gets for work its worker reported failed, the same on both services:
    its input (4xx; ``param`` names the request field, an image by default), the device's
    memory or a judge endpoint's load (503, retryable), an endpoint refusing (502), a job
    cancelled (nobody is listening any more) or the backend (500)."""
    if kind == "invalid_input" and param not in (None, "image"):
        return InvalidInput(message, param=param)
    if kind == "invalid_input":
        return InvalidImage(message, param="image")
    if kind == "out_of_memory":
        return OutOfMemory(message, retry_after_s=5)
    if kind == "cancelled":
        return NotReady("the job was cancelled")
    if kind == "endpoint_unavailable":
        return UpstreamUnavailable(message, retry_after_s=5)
    if kind == "endpoint_refused":
        return UpstreamError(message)
    return BackendError(message)


def error_response(
    status_code: int,
    error_type: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    model_state: ModelState | None = None,
    retryable: bool | None = None,
) -> JSONResponse:
    info = ErrorInfo(
        type=error_type,
        message=message,
        param=param,
        model_state=model_state,
        retryable=retryable,
    )
    # model_state and retryable are said only where they are known.
    omit = {name for name in ("model_state", "retryable") if getattr(info, name) is None}
    content = ErrorResponse(error=info).model_dump(mode="json", exclude={"error": omit})
    return JSONResponse(content, status_code=status_code, headers=headers)


def _validation_param(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One readable line (and the field at fault) from pydantic's list of errors."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    param = _validation_param(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    # pydantic prefixes messages from our own validators with "Value error, ".
    msg = msg.removeprefix("Value error, ")
    text = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text, param


_HTTP_ERROR_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def first_service_error(group: BaseExceptionGroup[BaseException]) -> ServiceError | None:
    """The first ServiceError in an exception group, however deeply nested, or None."""
    for exc in group.exceptions:
        if isinstance(exc, ServiceError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = first_service_error(exc)
            if found is not None:
                return found
    return None


def install_exception_handlers(app: FastAPI) -> None:
    """Map every error to the shared envelope; call once in each app factory."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(
            exc.status_code,
            exc.error_type,
            exc.message,
            param=exc.param,
            headers=exc.headers(),
            model_state=getattr(exc, "model_state", None),
            retryable=exc.retryable,
        )

    @app.exception_handler(ExceptionGroup)
    async def _error_group(request: Request, exc: ExceptionGroup[Exception]) -> JSONResponse:
        # Work run as concurrent tasks (a TaskGroup: n images of one edit) fails as a group;
        # the client gets the error of the task that failed, mapped as any other, never a 500.
        first = first_service_error(exc)
        if first is None:
            return await _unexpected(request, exc)
        return await _service_error(request, first)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return error_response(422, "invalid_request", message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, error_type, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "server_error", "internal server error")
