"""A judge served elsewhere, behind an OpenAI-compatible chat completions endpoint.

GPT-4.1 (GEdit-Bench's reference judge), a vLLM or SGLang server with a large VLM, or
``transformers serve``: one question is one ``POST {base_url}/chat/completions`` with the images as
data URLs, at temperature 0. Expected mode reads the answer's top log-probabilities
(``openai_logprobs``); generate mode reads its text. Which of the two the endpoint supports is
found out at load time, by a probe question, and said in /v1/info.

The endpoint is untrusted input. Up to ``max_concurrency`` questions are in flight at once, each
bounded in time and size (``openai_client``: retries, deadlines, error mapping, key masking).
An endpoint that refuses one question's content (400, 413, 422) leaves that question unscored
with the reason; one that fails a question after its retries fails only that question's item
(502 / 503), its batch-mates are answered; one that refuses us (401, 403, 404) or fails every
question fails the batch with a clear message. Log-probabilities that are not probabilities
(NaN, inf, above zero) leave the question unscored; usage that is not a count is left out.
Neither the API key nor the endpoint's raw body reaches a log, a response or a record.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from PIL import Image as PILImage
from PIL.Image import Image

from reward_service.backends.base import (
    BackendOutput,
    BackendSpec,
    EndpointError,
    GeneratedText,
    InvalidOption,
    JudgeItem,
    JudgeQuestion,
    LoadedModel,
    Mode,
    QuestionError,
    QuestionOutput,
    ScoreTokenLogprobs,
    TokenUsage,
    Unanswered,
)
from reward_service.backends.openai_client import ChatClient, Refused
from reward_service.backends.openai_endpoint import OPTION, EndpointConfig
from reward_service.backends.openai_logprobs import (
    MAX_UNRESOLVED,
    positions_of,
    read_score_tokens,
)

logger = logging.getLogger(__name__)

_EXPECTED_MAX_TOKENS = 2  # the score's first token, and the next one to tell 1 from 10
_MAX_USAGE = 2**53  # token counts beyond this are not counts


def _data_url(image: Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_USAGE:
        return None
    return value


def _usage(completion: Mapping[str, Any]) -> TokenUsage | None:
    """The reported token usage; None where it is missing or not counts (negative, too big)."""
    usage = completion.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt, generated = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is None or generated is None:
        return None
    return TokenUsage(prompt_tokens=prompt, completion_tokens=generated)


class OpenAIJudgeBackend:
    """JudgeBackend over an OpenAI-compatible endpoint (``REWARD_BACKEND=openai``)."""

    def __init__(self, spec: BackendSpec) -> None:
        # Refused for its configuration (InvalidOption): final, no restart can fix a setting.
        config = spec.options.get(OPTION)
        if not isinstance(config, EndpointConfig):
            raise InvalidOption(
                "the openai backend needs REWARD_OPENAI_BASE_URL (the endpoint's base URL, e.g. "
                "http://vllm:8000/v1)"
            )
        if not isinstance(spec.model, str) or not spec.model.strip():
            raise InvalidOption(
                "the openai backend needs REWARD_MODEL: the name of the model the endpoint serves"
            )
        config.check()
        self.spec = spec
        self.config = config
        self.transport: httpx.AsyncBaseTransport | None = None  # tests: httpx.MockTransport
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
        except Refused:
            completion = None
        except EndpointError as exc:
            raise RuntimeError(exc.message) from None
        if completion is not None and positions_of(completion) is not None:
            return ("expected", "generate"), _reported_model(completion, client.redact)
        if completion is None:
            plain = self._body(question, urls, logprobs=False)
            try:
                completion = client.complete(plain)
            except (Refused, EndpointError) as exc:
                raise RuntimeError(f"the judge endpoint failed the start-up probe: {exc}") from None
        return ("generate",), _reported_model(completion, client.redact)

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

    def score(self, prepared: object) -> Sequence[BackendOutput]:
        """Every question on its own: one the endpoint fails (after its retries, or past its
        deadline) fails only its item (QuestionError); only when the endpoint failed every
        question of the batch does the batch fail as a whole (EndpointError)."""
        if self._pool is None:
            raise RuntimeError("the openai backend is not loaded")
        work: list[tuple[JudgeQuestion, dict[str, Any]]] = prepared  # type: ignore[assignment]
        outputs = list(self._pool.map(self._ask_isolated, work))
        failures = [o for o in outputs if isinstance(o, EndpointError)]
        if failures and len(failures) == len(outputs):
            raise failures[0]
        return [
            QuestionError(o.message, o.retryable) if isinstance(o, EndpointError) else o
            for o in outputs
        ]

    def _ask_isolated(
        self, work: tuple[JudgeQuestion, dict[str, Any]]
    ) -> QuestionOutput | EndpointError:
        try:
            return self._ask(work)
        except EndpointError as exc:
            logger.warning("question %r: %s", work[0].key, exc.message)
            return exc

    def _ask(self, work: tuple[JudgeQuestion, dict[str, Any]]) -> QuestionOutput:
        question, body = work
        client = self._require_client()
        try:
            completion = client.complete(body)
        except Refused as exc:
            logger.warning("question %r: %s", question.key, exc)
            return Unanswered(str(exc))
        usage = _usage(completion)
        if question.mode == "expected":
            positions = positions_of(completion)
            if positions is None:
                return Unanswered(
                    "the judge endpoint returned no log-probabilities for this answer", usage
                )
            reading = read_score_tokens(positions, question.scale)
            if reading.invalid is not None:
                return Unanswered(
                    f"the judge endpoint reported {reading.invalid}: not a probability; not scored",
                    usage,
                )
            if reading.unresolved > MAX_UNRESOLVED:
                return Unanswered(
                    "the endpoint's top log-probabilities cannot tell a lead digit from the "
                    f"numbers it starts (1 from 10): P = {reading.unresolved:.3f} with no "
                    "continuation listed",
                    usage,
                )
            tokens = reading.tokens
            return ScoreTokenLogprobs(tokens.first, tokens.after_one, usage, tokens.after_other)
        text = client.redact(_text(completion))
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


def _reported_model(completion: Mapping[str, Any], redact: Callable[[str], str]) -> str | None:
    """The model the endpoint says answered: key masked first, then cut, printable only."""
    model = completion.get("model")
    if not isinstance(model, str):
        return None
    printable = "".join(c if c.isprintable() else "?" for c in redact(model))
    return redact(printable[:200])


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
