"""The openai judge backend's HTTP behaviour: the probe, retries and backoff, the error mapping,
secrets. The endpoint is httpx's MockTransport replaying recorded answer shapes (this file is
about HTTP and faults); the real-server path is test_openai_serve_tiny.py."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from reward_service.backends.base import (
    BackendSpec,
    EndpointError,
    GeneratedText,
    JudgeItem,
    JudgeQuestion,
    ScoreTokenLogprobs,
    TokenUsage,
    Unanswered,
)
from reward_service.backends.factory import make_backend
from reward_service.backends.openai_backend import OpenAIJudgeBackend
from reward_service.backends.openai_endpoint import OPTION, EndpointConfig
from reward_service.config import RewardSettings
from reward_service.scorer import read_output

ANSWERS = Path(__file__).parent / "data" / "openai_answers"
SECRET = "sk-test-do-not-leak-42"
Handler = Callable[[httpx.Request], httpx.Response]


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ANSWERS / f"{name}.json").read_text())
    return loaded


class Endpoint:
    """Records every request; answers with the handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        return self.handler(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def backend(endpoint: Endpoint, **config: Any) -> OpenAIJudgeBackend:
    options = {OPTION: EndpointConfig(base_url="http://judge.test/v1", **config)}
    spec = BackendSpec("openai", "gpt-4.1", None, "auto", "/tmp", options)
    made = make_backend(spec)
    assert isinstance(made, OpenAIJudgeBackend)
    made.transport = httpx.MockTransport(endpoint)
    return made


def question(mode: str = "expected", text: str = "Score the edit 0-10.") -> JudgeQuestion:
    return JudgeQuestion("r/0/q", "You are a judge.", (0, text), mode, 64)  # type: ignore[arg-type]


def ask(judge: OpenAIJudgeBackend, *questions: JudgeQuestion) -> list[Any]:
    image = Image.new("RGB", (32, 24), (10, 200, 30))
    items = [JudgeItem((image,), (q,)) for q in questions]
    return list(judge.score(judge.prepare(items)))


def with_logprobs(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=recorded("openai_whole_tokens"))


def test_the_probe_finds_logprob_support_and_provenance_names_both_models() -> None:
    endpoint = Endpoint(with_logprobs)
    judge = backend(endpoint, api_key=SECRET)
    model = judge.load("cpu")
    assert model.modes == ("expected", "generate")
    assert (model.id, model.source, model.meaningful) == ("gpt-4.1", "endpoint", True)
    assert model.details["endpoint_model"] == "gpt-4.1-2025-04-14"
    probe = endpoint.bodies()[0]
    assert probe["logprobs"] is True and probe["top_logprobs"] == 20
    assert endpoint.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(judge.config) and SECRET not in json.dumps(model.details)


def test_an_endpoint_without_logprobs_supports_generate_mode_only() -> None:
    endpoint = Endpoint(
        lambda _: httpx.Response(200, json=recorded("transformers_serve_no_logprobs"))
    )
    assert backend(endpoint).load("cpu").modes == ("generate",)


def test_an_endpoint_that_refuses_the_logprobs_parameter_supports_generate_mode_only() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "logprobs" in json.loads(request.content):
            return httpx.Response(400, json={"error": {"message": "logprobs not supported"}})
        return httpx.Response(200, json=recorded("transformers_serve_no_logprobs"))

    endpoint = Endpoint(handler)
    assert backend(endpoint).load("cpu").modes == ("generate",)
    assert len(endpoint.requests) == 2


def test_images_go_as_png_data_urls_and_the_key_can_come_from_a_secret_file(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text(SECRET + "\n")
    endpoint = Endpoint(with_logprobs)
    judge = backend(endpoint, api_key="ignored", api_key_file=secret_file)
    judge.load("cpu")
    ask(judge, question())
    sent = endpoint.bodies()[-1]
    assert endpoint.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert sent["messages"][0] == {"role": "system", "content": "You are a judge."}
    image_part, text_part = sent["messages"][1]["content"]
    assert text_part == {"type": "text", "text": "Score the edit 0-10."}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (32, 24)
    assert sent["temperature"] == 0 and sent["max_tokens"] == 2


def test_expected_mode_reads_logprobs_and_reports_usage() -> None:
    judge = backend(Endpoint(with_logprobs))
    judge.load("cpu")
    [output] = ask(judge, question())
    assert isinstance(output, ScoreTokenLogprobs)
    assert output.usage == TokenUsage(prompt_tokens=1543, completion_tokens=1)
    score = read_output("q", output)
    assert score.score is not None and 7.0 < score.score < 9.0
    assert score.usage is not None and score.usage.total_tokens == 1544


def test_a_one_that_cannot_be_told_from_ten_leaves_the_question_unscored() -> None:
    unresolved = recorded("vllm_qwen_one_unresolved")
    judge = backend(Endpoint(lambda _: httpx.Response(200, json=unresolved)))
    judge.load("cpu")
    [output] = ask(judge, question())
    assert isinstance(output, Unanswered)
    assert "1 from 10" in output.reason
    score = read_output("q", output)
    assert score.score is None and score.error == output.reason


def test_generate_mode_returns_the_text_verbatim() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        text = "The sky is red. Score: 7" if body["max_tokens"] == 64 else "5"
        answer = recorded("transformers_serve_no_logprobs")
        answer["choices"][0]["message"]["content"] = text
        return httpx.Response(200, json=answer)

    judge = backend(Endpoint(handler))
    judge.load("cpu")
    [output] = ask(judge, question("generate"))
    assert isinstance(output, GeneratedText)
    assert output.text == "The sky is red. Score: 7"
    assert output.new_tokens == 8


def test_429_and_503_are_retried_honouring_retry_after() -> None:
    # Waits longer than the backoff would be at those attempts (0.25-0.5 s, then 0.5-1 s), so a
    # client ignoring either header retries sooner than the gaps asserted below.
    answers = iter(
        [
            httpx.Response(200, json=recorded("openai_whole_tokens")),  # the probe
            httpx.Response(429, headers={"retry-after-ms": "600"}, json={"error": {}}),
            httpx.Response(503, headers={"retry-after": "1"}),
            httpx.Response(200, json=recorded("openai_whole_tokens")),
        ]
    )
    sent: list[float] = []

    def answer(_: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return next(answers)

    endpoint = Endpoint(answer)
    judge = backend(endpoint, max_retries=3)
    judge.load("cpu")
    [output] = ask(judge, question())
    assert isinstance(output, ScoreTokenLogprobs)
    assert len(endpoint.requests) == 4
    # Lower bounds only: each retry waited at least what the endpoint asked for.
    assert sent[2] - sent[1] >= 0.6
    assert sent[3] - sent[2] >= 1.0


def test_a_400_is_never_retried_and_leaves_only_that_question_unscored() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "forbidden" in json.dumps(body["messages"]):
            message = f"Invalid image content (key {SECRET} was used)"
            return httpx.Response(400, json={"error": {"message": message}})
        return httpx.Response(200, json=recorded("openai_whole_tokens"))

    endpoint = Endpoint(handler)
    judge = backend(endpoint, api_key=SECRET, max_retries=3)
    judge.load("cpu")
    bad, good = ask(judge, question(text="forbidden"), question())
    assert isinstance(bad, Unanswered) and isinstance(good, ScoreTokenLogprobs)
    assert "refused this question (400)" in bad.reason
    assert "Invalid image content" in bad.reason and SECRET not in bad.reason
    assert len(endpoint.requests) == 3  # probe, one try each


@pytest.mark.parametrize(
    ("status", "words"), [(401, "credentials"), (403, "credentials"), (404, "no such model")]
)
def test_refusals_of_us_fail_the_batch_unretried_with_a_clear_message(
    status: int, words: str
) -> None:
    answers = iter([httpx.Response(200, json=recorded("openai_whole_tokens"))])

    def handler(_: httpx.Request) -> httpx.Response:
        raw = {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
        return next(answers, httpx.Response(status, json=raw))

    endpoint = Endpoint(handler)
    judge = backend(endpoint, api_key=SECRET, max_retries=3)
    judge.load("cpu")
    with pytest.raises(EndpointError) as caught:
        ask(judge, question())
    assert not caught.value.retryable
    assert words in caught.value.message and SECRET not in caught.value.message
    assert len(endpoint.requests) == 2


def test_an_endpoint_that_stays_overloaded_fails_the_batch_as_retryable() -> None:
    answers = iter([httpx.Response(200, json=recorded("openai_whole_tokens"))])
    endpoint = Endpoint(
        lambda _: next(answers, httpx.Response(500, json={"error": {"message": "boom"}}))
    )
    judge = backend(endpoint, max_retries=1)
    judge.load("cpu")
    with pytest.raises(EndpointError) as caught:
        ask(judge, question())
    assert caught.value.retryable and "500" in caught.value.message
    assert len(endpoint.requests) == 3  # probe + two tries


def test_an_unreachable_endpoint_fails_the_load_with_a_message_and_no_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    judge = backend(Endpoint(refuse), api_key=SECRET, max_retries=0)
    with pytest.raises(RuntimeError, match="could not reach the judge endpoint") as caught:
        judge.load("cpu")
    assert SECRET not in str(caught.value)


def test_settings_carry_the_endpoint_to_the_backend_and_require_a_base_url(
    tmp_path: Path,
) -> None:
    settings = RewardSettings(
        backend="openai",
        model="gpt-4.1",
        openai_base_url="https://user:pw@api.example.test/v1",
        openai_api_key=SECRET,  # type: ignore[arg-type]
        openai_max_concurrency=3,
    )
    assert SECRET not in repr(settings)
    config = settings.backend_spec().options[OPTION]
    assert isinstance(config, EndpointConfig)
    assert config.key() == SECRET and config.max_concurrency == 3
    assert config.public_url == "https://api.example.test/v1"
    assert SECRET not in repr(settings.backend_spec())
    assert settings.resolve_devices() == ["cpu"]
    with pytest.raises(ValueError, match="REWARD_OPENAI_BASE_URL"):
        RewardSettings(backend="openai", model="gpt-4.1")


@pytest.mark.parametrize(
    "echoed",
    [
        f"bad key {SECRET}",
        f"{'x' * 295} {SECRET}",  # across the message's cut
        f"key starts {SECRET[:16]}",  # the endpoint cut the key itself
        f"key ends {SECRET[-16:]}!",
    ],
)
def test_the_key_whole_or_a_long_piece_of_it_is_masked_before_the_message_is_cut(
    echoed: str,
) -> None:
    from reward_service.backends.openai_client import Redactor

    masked = Redactor(SECRET)(echoed)
    assert "***" in masked
    assert all(SECRET[i : i + 16] not in masked for i in range(len(SECRET) - 15))


def test_listed_probabilities_that_add_up_to_more_than_one_leave_the_question_unscored() -> None:
    answer = recorded("openai_whole_tokens")
    for entry in answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]:
        entry["logprob"] = -0.01
    judge = backend(Endpoint(lambda _: httpx.Response(200, json=answer)))
    judge.load("cpu")
    [output] = ask(judge, question())
    assert isinstance(output, Unanswered) and "add up to" in output.reason
