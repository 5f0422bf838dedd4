"""POST /chat/completions to an untrusted OpenAI-compatible endpoint, bounded in every way.

- Time: one try has a hard end-to-end deadline (``timeout_s``, headers and body together), not a
  per-read timeout a trickling endpoint can renew forever. A try that runs out of time is not
  tried again (the endpoint is too slow for this question; the caller says so, retryable).
- Size: an answer is read up to ``max_answer_bytes`` (an announced larger Content-Length is
  refused before reading); an error's body up to 64 KiB, for its message only.
- Retries: 429, 5xx and connection errors, with exponential backoff honouring Retry-After;
  other 4xx never. A question the endpoint refuses (400, 413, 415, 422) raises ``Refused``; an
  endpoint that refuses us (401, 403, 404), stays unavailable, or answers what is not a chat
  completion raises ``EndpointError``.
- Secrets: every string that comes from the endpoint (error message, reason phrase, reported
  model, answer text) goes through ``Redactor`` before anything else is done with it (before
  truncation, before a log line), so neither the key nor a long piece of it reaches a log, a
  response or a record.

The requests run on one event loop in a thread of this client's own, so that a deadline can
cancel a read in progress; callers block in ``complete`` from any number of threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from reward_service.backends.base import EndpointError
from reward_service.backends.openai_endpoint import EndpointConfig

logger = logging.getLogger(__name__)

MAX_RETRY_WAIT_S = 60.0
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 300
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
_QUESTION_REFUSED = frozenset({400, 413, 415, 422})
_WINDOW = 16  # a piece of the key this long anywhere in a string is masked


class Refused(Exception):
    """The endpoint refused this one question's content."""


class _TooLarge(Exception):
    pass


class Redactor:
    """Masks the API key, whole or any piece of it ``_WINDOW`` characters long (an endpoint
    may echo a cut key), in any string."""

    MASK = "***"

    def __init__(self, secret: str | None) -> None:
        self._secret = secret or ""
        width = min(len(self._secret), _WINDOW)
        self._width = width
        self._pieces = (
            {self._secret[i : i + width] for i in range(len(self._secret) - width + 1)}
            if width
            else set()
        )

    def __call__(self, text: str) -> str:
        if not self._pieces or len(text) < self._width:
            return text
        text = text.replace(self._secret, self.MASK)
        width = self._width
        covered = [False] * len(text)
        for start in range(len(text) - width + 1):
            if text[start : start + width] in self._pieces:
                covered[start : start + width] = [True] * width
        if not any(covered):
            return text
        out: list[str] = []
        for index, char in enumerate(text):
            if not covered[index]:
                out.append(char)
            elif index == 0 or not covered[index - 1]:
                out.append(self.MASK)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str
    headers: httpx.Headers
    body: bytes
    complete: bool  # the whole body was read (not cut at a bound)


def retry_after_s(headers: Mapping[str, str], attempt: int) -> float:
    """How long to wait before the next try: the endpoint's Retry-After (OpenAI also sends
    retry-after-ms), else exponential backoff with jitter; at most a minute."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if seconds != seconds:  # NaN
            continue
        return min(MAX_RETRY_WAIT_S, max(0.0, seconds))
    return backoff_s(attempt)


def backoff_s(attempt: int) -> float:
    wait: float = min(MAX_RETRY_WAIT_S, 0.5 * 2.0**attempt)
    return wait * (0.5 + random.random() / 2)  # jitter


class ChatClient:
    """POST /chat/completions with the bounds, retries and error mapping of the module
    docstring."""

    def __init__(
        self,
        config: EndpointConfig,
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self.redact = Redactor(api_key)
        headers = {"Accept-Encoding": "identity"}  # sizes are bounded as sent, no inflation
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_concurrency),
            transport=transport,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="judge-endpoint-io", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The completion, or Refused (this question) or EndpointError."""
        return asyncio.run_coroutine_threadsafe(self._complete(body), self._loop).result()

    async def _complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        attempts = self._config.max_retries + 1
        where = self._config.public_url
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                async with asyncio.timeout(self._config.timeout_s):
                    answer = await self._post(body)
            except TimeoutError:
                raise EndpointError(
                    f"the judge endpoint {where} did not answer within "
                    f"{self._config.timeout_s:g}s (REWARD_OPENAI_TIMEOUT_S)",
                    retryable=True,
                ) from None
            except _TooLarge:
                raise EndpointError(
                    f"the judge endpoint's answer is larger than "
                    f"{self._config.max_answer_bytes} bytes; not read",
                    retryable=False,
                ) from None
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(
                        f"could not reach the judge endpoint {where} "
                        f"({type(exc).__name__}) after {attempts} tries",
                        retryable=True,
                    ) from None
                await asyncio.sleep(backoff_s(attempt))
                continue
            if answer.status in _RETRYABLE:
                wait = retry_after_s(answer.headers, attempt)
                if last:
                    raise EndpointError(
                        f"the judge endpoint answered {answer.status} "
                        f"({self._upstream_message(answer)}) after {attempts} tries",
                        retryable=True,
                        retry_after_s=max(wait, 1.0),
                    )
                logger.info("judge endpoint answered %d; retrying in %.1fs", answer.status, wait)
                await asyncio.sleep(wait)
                continue
            return self._completion(answer)
        raise AssertionError("unreachable")

    async def _post(self, body: Mapping[str, Any]) -> _Answer:
        async with self._client.stream("POST", "chat/completions", json=body) as response:
            success = response.is_success
            limit = self._config.max_answer_bytes if success else MAX_ERROR_BODY_BYTES
            declared = response.headers.get("content-length", "")
            if success and declared.isdigit() and int(declared) > limit:
                raise _TooLarge
            chunks: list[bytes] = []
            size = 0
            complete = True
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    if success:
                        raise _TooLarge
                    complete = False
                    break
                chunks.append(chunk)
            return _Answer(
                response.status_code,
                response.reason_phrase,
                response.headers,
                b"".join(chunks),
                complete,
            )

    def _completion(self, answer: _Answer) -> dict[str, Any]:
        status = answer.status
        if status in _QUESTION_REFUSED:
            raise Refused(
                f"the judge endpoint refused this question ({status}): "
                f"{self._upstream_message(answer)}"
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
        if not 200 <= status < 300:
            raise EndpointError(
                f"the judge endpoint answered {status} ({self._upstream_message(answer)})",
                retryable=False,
            )
        try:
            completion = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError):
            completion = None
        if not isinstance(completion, dict):
            raise EndpointError(
                "the judge endpoint answered with something that is not a chat completion",
                retryable=False,
            )
        return completion

    def _upstream_message(self, answer: _Answer) -> str:
        """The endpoint's own error message (or reason phrase), key masked first, then made one
        short line; never its raw body."""
        message: object = None
        if answer.complete:
            try:
                parsed = json.loads(answer.body)
            except (ValueError, UnicodeDecodeError):
                parsed = None
            error = parsed.get("error") if isinstance(parsed, dict) else None
            message = error.get("message") if isinstance(error, Mapping) else error
        if not isinstance(message, str) or not message.strip():
            message = answer.reason or "no message"
        assert isinstance(message, str)
        masked = self.redact(message)
        printable = "".join(c if c.isprintable() else " " for c in masked)
        short = " ".join(printable.split())[:MAX_MESSAGE_CHARS]
        return self.redact(short) or "no message"
