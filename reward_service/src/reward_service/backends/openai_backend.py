"""A judge served elsewhere, behind an OpenAI-compatible chat completions endpoint.

GPT-4.1 (GEdit-Bench's reference judge), a vLLM or SGLang server with a large VLM, or
``transformers serve``: one question is one ``POST {base_url}/chat/completions`` with the images as
data URLs, at temperature 0. Expected mode reads the answer's top log-probabilities
(``openai_logprobs``); generate mode reads its text. Which of the two the endpoint supports is
found out at load time, by a probe question, and said in /v1/info.

Up to ``max_concurrency`` questions are in flight at once. 429, 5xx and connection errors are
retried with exponential backoff, honouring Retry-After; other 4xx never are. An endpoint that
refuses one question's content (400, 413, 422) leaves that question unscored with the reason;
one that refuses us (401, 403, 404) or stays unavailable fails the batch with a clear message
(502 / 503). Neither the API key nor the endpoint's raw body reaches a log, a response or a record.
"""

from __future__ import annotations

import base64
import io
import logging
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from PIL import Image as PILImage
from PIL.Image import Image

from reward_service.backends.base import (
    BackendSpec,
    EndpointError,
    GeneratedText,
    JudgeItem,
    JudgeQuestion,
    LoadedModel,
    Mode,
    QuestionOutput,
    ScoreTokenLogprobs,
    TokenUsage,
    Unanswered,
)
from reward_service.backends.openai_endpoint import OPTION, EndpointConfig
from reward_service.backends.openai_logprobs import (
    MAX_UNRESOLVED,
    positions_of,
    read_score_tokens,
)

logger = logging.getLogger(__name__)

MAX_RETRY_WAIT_S = 60.0
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
_QUESTION_REFUSED = frozenset({400, 413, 415, 422})
_EXPECTED_MAX_TOKENS = 2  # the score's first token, and the next one to tell 1 from 10


class _Refused(Exception):
    """The endpoint refused this one question's content."""


def _data_url(image: Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _usage(completion: Mapping[str, Any]) -> TokenUsage | None:
    usage = completion.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt, generated = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(generated, int):
        return None
    return TokenUsage(prompt_tokens=prompt, completion_tokens=generated)


def retry_after_s(response: httpx.Response, attempt: int) -> float:
    """How long to wait before the next try: the endpoint's Retry-After (OpenAI also sends
    retry-after-ms), else exponential backoff with jitter; at most a minute."""
    headers = response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(MAX_RETRY_WAIT_S, max(0.0, float(value) * scale))
        except ValueError:
            try:
                when = parsedate_to_datetime(value).timestamp()
            except (TypeError, ValueError):
                continue
            return min(MAX_RETRY_WAIT_S, max(0.0, when - time.time()))
    return backoff_s(attempt)


def backoff_s(attempt: int) -> float:
    wait: float = min(MAX_RETRY_WAIT_S, 0.5 * 2.0**attempt)
    return wait * (0.5 + random.random() / 2)  # jitter


class ChatClient:
    """POST /chat/completions with retries and the error mapping of the module docstring."""

    def __init__(
        self,
        config: EndpointConfig,
        api_key: str | None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = config
        self._secret = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_concurrency),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The completion, or _Refused (this question) or EndpointError (the whole batch)."""
        attempts = self._config.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._client.post("chat/completions", json=body)
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(
                        f"could not reach the judge endpoint {self._config.public_url} "
                        f"({type(exc).__name__}) after {attempts} tries",
                        retryable=True,
                    ) from None
                time.sleep(backoff_s(attempt))
                continue
            if response.status_code in _RETRYABLE:
                wait = retry_after_s(response, attempt)
                if last:
                    raise EndpointError(
                        f"the judge endpoint answered {response.status_code} "
                        f"({self._upstream_message(response)}) after {attempts} tries",
                        retryable=True,
                        retry_after_s=max(wait, 1.0),
                    )
                logger.info(
                    "judge endpoint answered %d; retrying in %.1fs", response.status_code, wait
                )
                time.sleep(wait)
                continue
            return self._answer(response)
        raise AssertionError("unreachable")

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status in _QUESTION_REFUSED:
            raise _Refused(
                f"the judge endpoint refused this question ({status}): "
                f"{self._upstream_message(response)}"
            )
        if status in (401, 403):
            raise EndpointError(
                f"the judge endpoint refused our credentials ({status}); check "
                "REWARD_OPENAI_API_KEY or REWARD_OPENAI_API_KEY_FILE",
                retryable=False,
            )
        if status == 404:
            raise EndpointError(
                "the judge endpoint has no such model or route (404); check "
                "REWARD_OPENAI_BASE_URL and REWARD_MODEL",
                retryable=False,
            )
        if not response.is_success:
            raise EndpointError(
                f"the judge endpoint answered {status} ({self._upstream_message(response)})",
                retryable=False,
            )
        try:
            completion = response.json()
        except ValueError:
            completion = None
        if not isinstance(completion, dict):
            raise EndpointError(
                "the judge endpoint answered with something that is not a chat completion",
                retryable=False,
            )
        return completion

    def _upstream_message(self, response: httpx.Response) -> str:
        """The endpoint's own error message, short, with our key masked; never its raw body."""
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        message = error.get("message") if isinstance(error, Mapping) else error
        if not isinstance(message, str) or not message.strip():
            return response.reason_phrase or "no message"
        message = " ".join(message.split())[:300]
        if self._secret:
            message = message.replace(self._secret, "***")
        return message


class OpenAIJudgeBackend:
    """JudgeBackend over an OpenAI-compatible endpoint (``REWARD_BACKEND=openai``)."""

    def __init__(self, spec: BackendSpec) -> None:
        config = spec.options.get(OPTION)
        if not isinstance(config, EndpointConfig):
            raise ValueError("the openai backend needs REWARD_OPENAI_BASE_URL")
        self.spec = spec
        self.config = config
        self.transport: httpx.BaseTransport | None = None  # tests: httpx.MockTransport
        self._client: ChatClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._modes: tuple[Mode, ...] = ()

    # ------------------------------------------------------------------ lifecycle

    def load(self, device: str) -> LoadedModel:  # noqa: ARG002 - the model runs elsewhere
        self._client = ChatClient(self.config, self.config.key(), self.transport)
        self._pool = ThreadPoolExecutor(self.config.max_concurrency, "judge-endpoint")
        modes, reported = self._probe()
        self._modes = modes
        logger.info(
            "judge endpoint %s serves %s (reports %s); modes: %s",
            self.config.public_url,
            self.spec.model,
            reported,
            ", ".join(modes),
        )
        return LoadedModel(
            id=self.spec.model,
            source="endpoint",
            revision=None,
            model_class="openai-chat-completions",
            dtype="remote",
            meaningful=True,
            details={
                "base_url": self.config.public_url,
                "endpoint_model": reported,
                "temperature": 0,
                "top_logprobs": self.config.top_logprobs if "expected" in modes else None,
            },
            modes=modes,
        )

    def _probe(self) -> tuple[tuple[Mode, ...], str | None]:
        """Ask one small question with an image, asking for log-probabilities; an endpoint that
        refuses them, or answers without them, supports generate mode only."""
        question = JudgeQuestion(
            key="probe", system=None, content=(0, "Answer with one digit: 2+3="), mode="expected"
        )
        urls = [_data_url(PILImage.new("RGB", (64, 64), (128, 64, 32)))]
        client = self._require_client()
        try:
            completion = client.complete(self._body(question, urls))
        except _Refused:
            completion = None
        except EndpointError as exc:
            raise RuntimeError(exc.message) from None
        if completion is not None and positions_of(completion) is not None:
            return ("expected", "generate"), _reported_model(completion)
        if completion is None:
            plain = self._body(question, urls, logprobs=False)
            try:
                completion = client.complete(plain)
            except (_Refused, EndpointError) as exc:
                raise RuntimeError(f"the judge endpoint failed the start-up probe: {exc}") from None
        return ("generate",), _reported_model(completion)

    def release(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        self._client = self._pool = None

    # ------------------------------------------------------------------ work

    def prepare(self, items: Sequence[JudgeItem[Image]]) -> object:
        """Request bodies, item by item; each image is encoded once, however many of its item's
        questions show it."""
        work: list[tuple[JudgeQuestion, dict[str, Any]]] = []
        for item in items:
            urls = [_data_url(image) for image in item.images]
            work.extend((question, self._body(question, urls)) for question in item.questions)
        return work

    def score(self, prepared: object) -> Sequence[QuestionOutput]:
        if self._pool is None:
            raise RuntimeError("the openai backend is not loaded")
        work: list[tuple[JudgeQuestion, dict[str, Any]]] = prepared  # type: ignore[assignment]
        return list(self._pool.map(self._ask, work))

    def _ask(self, work: tuple[JudgeQuestion, dict[str, Any]]) -> QuestionOutput:
        question, body = work
        try:
            completion = self._require_client().complete(body)
        except _Refused as exc:
            logger.warning("question %s: %s", question.key, exc)
            return Unanswered(str(exc))
        usage = _usage(completion)
        if question.mode == "expected":
            positions = positions_of(completion)
            if positions is None:
                return Unanswered(
                    "the judge endpoint returned no log-probabilities for this answer", usage
                )
            reading = read_score_tokens(positions)
            if reading.unresolved > MAX_UNRESOLVED:
                return Unanswered(
                    f"the endpoint's top log-probabilities cannot tell 1 from 10: P('1') = "
                    f"{reading.unresolved:.3f} with no continuation listed",
                    usage,
                )
            tokens = reading.tokens
            return ScoreTokenLogprobs(tokens.first, tokens.after_one, usage)
        text = _text(completion)
        return GeneratedText(text, usage.completion_tokens if usage else 0, usage)

    def _body(
        self, question: JudgeQuestion, urls: Sequence[str], *, logprobs: bool = True
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in question.content:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                content.append({"type": "image_url", "image_url": {"url": urls[part]}})
        messages: list[dict[str, Any]] = []
        if question.system:
            messages.append({"role": "system", "content": question.system})
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {"model": self.spec.model, "messages": messages, "temperature": 0}
        if question.mode == "expected":
            body["max_tokens"] = _EXPECTED_MAX_TOKENS
            if logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = self.config.top_logprobs
        else:
            body["max_tokens"] = question.max_new_tokens
        return body

    def _require_client(self) -> ChatClient:
        if self._client is None:
            raise RuntimeError("the openai backend is not loaded")
        return self._client


def _reported_model(completion: Mapping[str, Any]) -> str | None:
    model = completion.get("model")
    return model[:200] if isinstance(model, str) else None


def _text(completion: Mapping[str, Any]) -> str:
    """The answer's text; a refusal's text where the model refused (it parses as no score)."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return ""
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        return ""
    for key in ("content", "refusal"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""
