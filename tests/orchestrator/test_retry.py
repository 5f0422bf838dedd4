"""Retry classification against scripted answers: what is retried, how long, when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
import tenacity.wait

from orchestrator.clients import (
    EditorClient,
    ServiceCallError,
    ServiceUnreachable,
    make_http_client,
    parse_retry_after,
)
from orchestrator.retry import (
    CallStats,
    ReadinessGate,
    Retry,
    RetryPolicy,
    call_with_retry,
    classify,
)
from shared_schemas import EditorInfo
from tests.orchestrator.fakes import EDITOR, FakeServices, error

POLICY = RetryPolicy(job_deadline_s=600, probe_interval_s=0.01)


class Sleeps:
    """Records the waits instead of sleeping (no timed assertions, no slow tests)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def scripted(answers: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[str]]:
    """/v1/info answers from the script in order, then 200 with a valid EditorInfo."""
    seen: list[str] = []
    info = FakeServices().editor_info().model_dump(mode="json")

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/ready":
            return httpx.Response(
                200, json={"ready": True, "detail": "", "workers_ready": 1, "workers_total": 1}
            )
        if answers:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(200, json=info)

    return httpx.MockTransport(handle), seen


async def call_info(
    transport: httpx.MockTransport,
    sleeps: Sleeps,
    policy: RetryPolicy = POLICY,
    stats: CallStats | None = None,
) -> EditorInfo:
    async with make_http_client(transport=transport) as http:
        client = EditorClient(http, EDITOR)
        return await call_with_retry(
            client.info, policy=policy, label="test", sleep=sleeps, stats=stats
        )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415, 422])
def test_input_errors_are_never_retried(status: int) -> None:
    transport, seen = scripted([error(status, "invalid_input", "bad image")])
    sleeps = Sleeps()
    with pytest.raises(ServiceCallError, match="bad image") as caught:
        asyncio.run(call_info(transport, sleeps))
    assert seen == ["/v1/info"]
    assert sleeps.waits == []
    assert caught.value.status == status
    assert caught.value.error_type == "invalid_input"
    assert caught.value.message == "bad image"


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_statuses_are_retried_until_success(status: int) -> None:
    transport, seen = scripted([error(status, "busy", "try later")] * 3)
    stats = CallStats()
    info = asyncio.run(call_info(transport, Sleeps(), stats=stats))
    assert info.max_in_flight == 6
    assert seen.count("/v1/info") == 4
    assert (stats.attempts, stats.retries) == (4, 3)


def test_429_waits_at_least_retry_after() -> None:
    transport, seen = scripted([error(429, "queue_full", "full", retry_after="3")])
    sleeps = Sleeps()
    asyncio.run(call_info(transport, sleeps))
    assert seen.count("/v1/info") == 2
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 3


def test_retry_after_is_capped() -> None:
    transport, _ = scripted([error(503, "not_ready", "loading", retry_after="3600")])
    sleeps = Sleeps()
    asyncio.run(call_info(transport, sleeps, RetryPolicy(max_retry_after_s=7)))
    assert sleeps.waits == [7]


def test_backoff_grows_but_stays_under_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=4)
    transport, _ = scripted([error(503, "busy", "x")] * 12)
    sleeps = Sleeps()
    asyncio.run(call_info(transport, sleeps, policy))
    assert len(sleeps.waits) == 12
    assert all(0 <= wait <= 4 for wait in sleeps.waits)
    # The jitter is uniform below an envelope; with the jitter at its top, the envelope shows:
    # it doubles from the initial backoff, then stays at the cap.
    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: high)
    transport, _ = scripted([error(503, "busy", "x")] * 6)
    envelope = Sleeps()
    asyncio.run(call_info(transport, envelope, policy))
    assert envelope.waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_connection_errors_are_retried() -> None:
    request = httpx.Request("GET", f"{EDITOR}/v1/info")
    transport, seen = scripted(
        [
            httpx.ConnectError("refused", request=request),
            httpx.ReadError("reset", request=request),
            httpx.ReadTimeout("slow", request=request),
        ]
    )
    info = asyncio.run(call_info(transport, Sleeps()))
    assert info.model is not None
    assert seen.count("/v1/info") == 4


def test_server_errors_are_retried_only_twice() -> None:
    transport, seen = scripted([error(500, "server_error", "boom")] * 5)
    with pytest.raises(ServiceCallError, match="boom") as caught:
        asyncio.run(call_info(transport, Sleeps()))
    assert caught.value.status == 500
    assert seen.count("/v1/info") == 3


def test_gives_up_when_the_next_wait_would_pass_the_job_deadline() -> None:
    transport, seen = scripted([error(503, "not_ready", "restarting", retry_after="100")] * 3)
    with pytest.raises(ServiceCallError, match="restarting") as caught:
        asyncio.run(call_info(transport, Sleeps(), RetryPolicy(job_deadline_s=50)))
    assert caught.value.status == 503
    assert seen.count("/v1/info") == 1


def test_non_envelope_error_bodies_still_give_a_typed_error() -> None:
    transport, _ = scripted([httpx.Response(413, text="<html>too big</html>")])
    with pytest.raises(ServiceCallError) as caught:
        asyncio.run(call_info(transport, Sleeps()))
    assert caught.value.status == 413
    assert "too big" in caught.value.message


def test_a_2xx_body_that_breaks_the_schema_is_a_permanent_error() -> None:
    transport, seen = scripted([httpx.Response(200, json={"service": "editor"})])
    with pytest.raises(ServiceCallError, match="does not match the shared schema") as caught:
        asyncio.run(call_info(transport, Sleeps()))
    assert caught.value.error_type == "invalid_response"
    assert seen.count("/v1/info") == 1


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ServiceUnreachable("editor", "refused"), Retry.UNTIL_DEADLINE),
        (ServiceCallError("editor", "x", status=429), Retry.UNTIL_DEADLINE),
        (ServiceCallError("editor", "x", status=507), Retry.CAPPED),
        (ServiceCallError("editor", "x", status=422), Retry.NEVER),
        (ValueError("a bug of ours"), Retry.NEVER),
    ],
)
def test_classification(exc: BaseException, expected: Retry) -> None:
    assert classify(exc) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_a_503_pauses_dispatch_until_ready_answers() -> None:
    """The circuit breaker: after a 503, nothing is sent but /ready probes until it is 200."""
    state = {"ready_after": 3, "probes": 0}
    log: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request.url.path)
        if request.url.path == "/ready":
            state["probes"] += 1
            if state["probes"] < state["ready_after"]:
                return error(503, "not_ready", "restarting")
            return httpx.Response(
                200, json={"ready": True, "detail": "", "workers_ready": 1, "workers_total": 1}
            )
        if log.count("/v1/info") == 1:
            return error(503, "worker_died", "worker died")
        return httpx.Response(200, json=FakeServices().editor_info().model_dump(mode="json"))

    async def go() -> None:
        async with make_http_client(transport=httpx.MockTransport(handle)) as http:
            client = EditorClient(http, EDITOR)
            gate = ReadinessGate("editor", client.is_ready, interval_s=0.001)
            try:
                await call_with_retry(
                    client.info, policy=POLICY, gate=gate, label="t", sleep=_no_wait
                )
            finally:
                await gate.close()
            assert gate.trips == 1

    asyncio.run(go())
    # The second /v1/info went out only after /ready said 200 (three probes).
    assert log == ["/v1/info", "/ready", "/ready", "/ready", "/v1/info"]


def test_a_down_services_retry_after_ends_when_its_ready_answers_again() -> None:
    """A draining service answers 503 with Retry-After 30; its successor may be ready in 5. The
    retry waits for /ready, not for the rest of the old process's Retry-After."""
    log: list[str] = []
    asked: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request.url.path)
        if request.url.path == "/ready":
            return httpx.Response(
                200, json={"ready": True, "detail": "", "workers_ready": 1, "workers_total": 1}
            )
        if log.count("/v1/info") == 1:
            return error(503, "not_ready", "the service is shutting down", retry_after="100")
        return httpx.Response(200, json=FakeServices().editor_info().model_dump(mode="json"))

    async def until_cancelled(seconds: float) -> None:  # a Retry-After that never runs out
        asked.append(seconds)
        await asyncio.Event().wait()

    async def go() -> EditorInfo:
        async with make_http_client(transport=httpx.MockTransport(handle)) as http:
            client = EditorClient(http, EDITOR)
            gate = ReadinessGate("editor", client.is_ready, interval_s=0.001)
            try:
                call = call_with_retry(
                    client.info, policy=POLICY, gate=gate, label="t", sleep=until_cancelled
                )
                return await asyncio.wait_for(call, timeout=60)  # a bound, not a measurement
            finally:
                await gate.close()

    assert isinstance(asyncio.run(go()), EditorInfo)
    assert asked == [100.0]  # the Retry-After was the wait asked for ...
    assert log == ["/v1/info", "/ready", "/v1/info"]  # ... and /ready 200 ended it


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


def test_gate_gives_up_at_the_deadline_when_the_service_never_returns() -> None:
    async def never() -> bool:
        return False

    async def go(check: Callable[[BaseException], None]) -> None:
        gate = ReadinessGate("editor", never, interval_s=0.001)
        gate.trip("test")
        try:
            await gate.wait_open(0.05)
        except ServiceCallError as exc:
            check(exc)
        else:
            raise AssertionError("expected the gate to time out")
        finally:
            await gate.close()

    def check(exc: BaseException) -> None:
        assert isinstance(exc, ServiceCallError)
        assert exc.error_type == "deadline_exceeded"

    asyncio.run(go(check))
