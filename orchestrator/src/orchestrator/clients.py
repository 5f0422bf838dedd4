"""Typed clients of the editor and reward services over one shared ``httpx.AsyncClient``.

Every method returns a shared_schemas model or raises a `ServiceCallError`: a non-2xx answer is
parsed from the shared `ErrorResponse` envelope into status, type, message and Retry-After; a
transport failure becomes `ServiceUnreachable`; a 2xx body that does not validate becomes
`InvalidResponse` (version skew between client and service). Retrying is not done here (see
retry.py): a client method is one attempt.
"""

from __future__ import annotations

import email.utils
import getpass
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from shared_schemas import (
    EditorInfo,
    EditRequest,
    EditResponse,
    ErrorResponse,
    ModelStateResponse,
    ProtocolsResponse,
    ReadyResponse,
    RewardInfo,
    ScoreRequest,
    ScoreResponse,
)
from shared_schemas import (
    ModelState as ServiceModelState,
)
from shared_schemas.scores import ProtocolDefinition

M = TypeVar("M", bound=BaseModel)

ModelState = Literal["loaded", "released", "not_ready", "unreachable"]
# A release waits for the jobs the service holds; a load reads and places a model of tens of GB.
HANDOVER_TIMEOUT = httpx.Timeout(connect=10.0, read=1800.0, write=30.0, pool=None)


class ServiceCallError(Exception):
    """One failed call to a service: what it answered (or that it did not answer)."""

    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        error_type: str = "error",
        retry_after_s: float | None = None,
        param: str | None = None,
        model_state: ServiceModelState | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.message = message
        self.status = status
        self.error_type = error_type
        self.retry_after_s = retry_after_s
        self.param = param
        self.model_state = model_state  # the envelope's typed field (not_ready answers)
        self.retryable = retryable  # the envelope's, where the service knows

    def as_record(self) -> dict[str, object]:
        """The ``error`` field of a failed result record."""
        return {
            "service": self.service,
            "type": self.error_type,
            "message": self.message,
            "status": self.status,
            "param": self.param,
        }


class ServiceUnreachable(ServiceCallError):
    """No HTTP answer: connection refused or reset, DNS, or a timeout."""


class InvalidResponse(ServiceCallError):
    """A 2xx answer whose body is not what shared_schemas says (client and service disagree)."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(service: str, response: httpx.Response) -> ServiceCallError:
    """A non-2xx answer as a typed error; tolerant of bodies that are not our envelope (proxies)."""
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    try:
        envelope = ErrorResponse.model_validate_json(response.content)
    except ValidationError:
        text = _readable(response.text)[:300] or response.reason_phrase
        return ServiceCallError(
            service,
            f"HTTP {response.status_code}: {text}",
            status=response.status_code,
            error_type="http_error",
            retry_after_s=retry_after,
        )
    return ServiceCallError(
        service,
        envelope.error.message,
        status=response.status_code,
        error_type=envelope.error.type,
        retry_after_s=retry_after,
        param=envelope.error.param,
        model_state=envelope.error.model_state,
        retryable=envelope.error.retryable,
    )


def what_to_do(exc: ServiceCallError) -> str:
    """What a user can do about a call that found no service of its kind at the URL (nothing
    answering, or a 404 for the route itself); "" for any other failure."""
    flag = f"--{exc.service}-url"
    if isinstance(exc, ServiceUnreachable):
        return (
            f"is the {exc.service} service running there? Start it (`python -m "
            f"{exc.service}_service`, or `docker compose up -d --wait`) or point {flag} at "
            "where it runs; `editbench status` checks both"
        )
    if exc.status == 404 and (exc.error_type == "http_error" or exc.message == "Not Found"):
        return f"no editbench {exc.service} service answers at that URL: check {flag}"
    return ""


def _readable(body: str) -> str:
    """A body that is not our envelope, as one line: an HTML error page (a web server or proxy
    at the URL) as its text without tags."""
    if re.search(r"(?i)<(!doctype|html|body|head)\b", body):
        body = re.sub(r"(?is)<(script|style)\b.*?</\1>|<[^>]*>", " ", body)
    return " ".join(body.split())


def answering_service(body: bytes) -> str | None:
    """The service an editbench answer names in its ``service`` field (/v1/info): ``editor`` or
    ``reward``; None for anything else."""
    try:
        found = json.loads(body)
    except ValueError:
        return None
    name = found.get("service") if isinstance(found, dict) else None
    return name if name in ("editor", "reward") else None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt limits. ``read_s`` must exceed the service's slowest answer (a 50-step edit)."""

    connect_s: float = 10.0
    read_s: float = 900.0
    write_s: float = 120.0

    def httpx(self) -> httpx.Timeout:
        # pool=None: our own semaphores bound concurrency, so waiting for a pooled connection is
        # never the limiting step and must not count as a failure.
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.write_s, pool=None
        )


CLIENT_HEADER = "X-Editbench-Client"
"""Who the requests are from, for the services' fair sharing (ignored where API keys are on:
there the key names the client)."""


def client_name(run: str | None = None) -> str:
    """``<user>/<run folder name>`` (or just the user), as the services' fair sharing sees us."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = "unknown"
    return f"{user}/{run}" if run else user


def make_http_client(
    timeouts: Timeouts | None = None, *, client: str | None = None, **kwargs: object
) -> httpx.AsyncClient:
    """The one AsyncClient a run shares between both services (kwargs: transport, for tests);
    every request says ``client`` (default: the user) in X-Editbench-Client."""
    return httpx.AsyncClient(
        timeout=(timeouts or Timeouts()).httpx(),
        headers={CLIENT_HEADER: client or client_name()},
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        follow_redirects=False,
        **kwargs,  # type: ignore[arg-type]
    )


class _ServiceClient:
    service = "service"

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _request(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        body: BaseModel | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> M:
        all_headers = dict(self._headers)
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        content = body.model_dump_json().encode() if body is not None else None
        try:
            response = await self.http.request(
                method,
                f"{self.base_url}{path}",
                content=content,
                headers=all_headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            kind = type(exc).__name__
            raise ServiceUnreachable(
                self.service,
                f"{kind} on {method} {self.base_url}{path}: {exc}".rstrip(": "),
                error_type="timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable",
            ) from exc
        if not response.is_success:
            raise error_from_response(self.service, response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            other = answering_service(response.content)
            if other is not None and other != self.service:  # the URLs mixed up
                message = (
                    f"{self.base_url} is the {other} service, not the {self.service} service: "
                    f"point --{self.service}-url at the {self.service} service (are --editor-url "
                    "and --reward-url swapped?)"
                )
            else:
                message = (
                    f"answer to {method} {path} does not match the shared schema: "
                    f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} (is "
                    f"{self.base_url} an editbench {self.service} service of this version?)"
                )
            raise InvalidResponse(
                self.service,
                message,
                status=response.status_code,
                error_type="invalid_response",
            ) from exc

    async def ready(self) -> ReadyResponse:
        """GET /ready: returns when ready, raises ServiceCallError (503 not_ready) otherwise."""
        return await self._request("GET", "/ready", ReadyResponse, timeout=httpx.Timeout(10.0))

    async def is_ready(self) -> bool:
        try:
            await self.ready()
        except ServiceCallError:
            return False
        return True

    async def model_state(self) -> ModelState:
        """From /ready: ``loaded`` (200), ``released`` (a 503 whose typed model_state says so),
        ``not_ready`` (loading, restarting, draining, failed) or ``unreachable``."""
        try:
            await self.ready()
        except ServiceUnreachable:
            return "unreachable"
        except ServiceCallError as exc:
            return "released" if is_released(exc) else "not_ready"
        return "loaded"

    async def release_model(self) -> ModelStateResponse:
        """POST /v1/model/release: free the GPU memory (the service first finishes its jobs)."""
        return await self._request(
            "POST", "/v1/model/release", ModelStateResponse, timeout=HANDOVER_TIMEOUT
        )

    async def load_model(self) -> ModelStateResponse:
        """POST /v1/model/load: load the model again; answers once it serves (minutes)."""
        return await self._request(
            "POST", "/v1/model/load", ModelStateResponse, timeout=HANDOVER_TIMEOUT
        )


def is_released(exc: ServiceCallError) -> bool:
    """A 503 because the model was released (not loading, restarting or draining): the
    envelope's typed ``model_state`` field says so, never its message."""
    return exc.status == 503 and exc.model_state == "released"


class EditorClient(_ServiceClient):
    """POST /v1/edits, GET /v1/info and /ready of the editor service."""

    service = "editor"

    async def info(self) -> EditorInfo:
        return await self._request("GET", "/v1/info", EditorInfo, timeout=httpx.Timeout(30.0))

    async def edit(self, request: EditRequest) -> EditResponse:
        return await self._request("POST", "/v1/edits", EditResponse, body=request)


class RewardClient(_ServiceClient):
    """POST /v1/scores, GET /v1/info, /v1/protocols and /ready of the reward service."""

    service = "reward"

    async def info(self) -> RewardInfo:
        return await self._request("GET", "/v1/info", RewardInfo, timeout=httpx.Timeout(30.0))

    async def protocols(self) -> ProtocolsResponse:
        return await self._request(
            "GET", "/v1/protocols", ProtocolsResponse, timeout=httpx.Timeout(30.0)
        )

    async def protocol(self, name: str) -> ProtocolDefinition:
        """GET /v1/protocols/{name}: the full definition, prompts included (for provenance)."""
        return await self._request(
            "GET",
            f"/v1/protocols/{quote(name, safe='')}",
            ProtocolDefinition,
            timeout=httpx.Timeout(30.0),
        )

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        return await self._request("POST", "/v1/scores", ScoreResponse, body=request)
