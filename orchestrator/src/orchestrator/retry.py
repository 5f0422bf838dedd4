"""When to try a call again, how long to wait, and when to stop sending altogether.

Classification (reliability.md 3.1, O1): connection errors and timeouts, 408, 429, 502, 503, 504
are transient and retried until the job's deadline; 500 and 507 (out of memory) are retried a few
times only; everything else (400, 401, 403, 404, 413, 415, 422, an answer that does not match the
schema) is permanent and never retried. Waits are exponential with full jitter, but never shorter
than the service's Retry-After (capped). A `ReadinessGate` per service is the circuit breaker (O2):
a transport error or a 503 closes it, one prober polls /ready, and every job waits at the gate
instead of hammering a restarting service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_random_exponential

from orchestrator.clients import ServiceCallError, ServiceUnreachable

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
CAPPED_STATUSES = frozenset({500, 507})
# A status that means "the service itself is down or restarting": pause all dispatch.
_TRIP_STATUSES = frozenset({502, 503})


class Retry(Enum):
    NEVER = "never"
    CAPPED = "capped"
    UNTIL_DEADLINE = "until_deadline"


def classify(exc: BaseException) -> Retry:
    """How an error of one attempt may be retried."""
    if isinstance(exc, ServiceUnreachable):
        return Retry.UNTIL_DEADLINE
    if isinstance(exc, ServiceCallError) and exc.status is not None:
        if exc.retryable is False:  # the service knows the same request fails again
            return Retry.NEVER
        if exc.status in TRANSIENT_STATUSES:
            return Retry.UNTIL_DEADLINE
        if exc.status in CAPPED_STATUSES:
            return Retry.CAPPED
    return Retry.NEVER


def is_retryable(exc: BaseException) -> bool:
    return classify(exc) is not Retry.NEVER


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff 0.5 s -> 30 s with full jitter; Retry-After honoured up to 120 s; 30 min per job."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0
    job_deadline_s: float = 1800.0
    max_attempts: int = 1000
    max_capped_retries: int = 2
    probe_interval_s: float = 5.0


class DeadlineExceeded(ServiceCallError):
    """The job's total deadline passed while the service was not ready."""


class ReadinessGate:
    """Circuit breaker on a service's /ready: closed while it is known to be down.

    `trip()` closes the gate and starts one prober that polls ``probe()`` every
    ``interval_s`` until it answers True, then opens the gate for everyone.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[bool]],
        interval_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._probe = probe
        self._interval_s = interval_s
        self._sleep = sleep
        self._open = asyncio.Event()
        self._open.set()
        self._prober: asyncio.Task[None] | None = None
        self.trips = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def trip(self, reason: str) -> None:
        if not self._open.is_set():
            return
        self.trips += 1
        logger.warning(
            "%s looks down (%s): pausing dispatch until /ready answers", self.name, reason
        )
        self._open.clear()
        self._prober = asyncio.create_task(self._probe_until_ready(), name=f"{self.name}-prober")

    async def _probe_until_ready(self) -> None:
        while True:
            await self._sleep(self._interval_s)
            try:
                ready = await self._probe()
            except Exception:  # a prober must never die: any failure means "not yet"
                ready = False
            if ready:
                logger.info("%s is ready again: resuming dispatch", self.name)
                self._open.set()
                return

    async def wait_open(self, timeout_s: float) -> None:
        """Return once the gate is open; raise DeadlineExceeded after ``timeout_s``."""
        if self._open.is_set():
            return
        try:
            await asyncio.wait_for(self._open.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            raise DeadlineExceeded(
                self.name,
                f"not ready for the rest of the job deadline ({timeout_s:.0f} s left)",
                error_type="deadline_exceeded",
            ) from None

    async def pause(self, seconds: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Sleep ``seconds`` (a backoff or a Retry-After), cut short when a closed gate opens:
        a restarting service's Retry-After (30 s while it drains) guessed for the process that
        went away; once /ready answers again there is nothing left to wait for."""
        if self._open.is_set():
            await sleep(seconds)
            return
        napping = asyncio.ensure_future(sleep(seconds))
        opened = asyncio.ensure_future(self._open.wait())
        try:
            await asyncio.wait({napping, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (napping, opened):
                waiting.cancel()
            await asyncio.gather(napping, opened, return_exceptions=True)

    async def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)


class _ShouldRetry:
    """tenacity ``retry=``: the classification above, with a cap for 500/507."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.capped_seen = 0

    def __call__(self, state: RetryCallState) -> bool:
        if state.outcome is None or not state.outcome.failed:
            return False
        exc = state.outcome.exception()
        if exc is None:
            return False
        kind = classify(exc)
        if kind is Retry.CAPPED:
            self.capped_seen += 1
            return self.capped_seen <= self.policy.max_capped_retries
        return kind is Retry.UNTIL_DEADLINE


class _Wait:
    """tenacity ``wait=``: jittered exponential backoff, but at least the capped Retry-After."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = wait_random_exponential(
            multiplier=policy.initial_backoff_s, max=policy.max_backoff_s
        )

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self.backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ServiceCallError) and exc.retry_after_s is not None:
            wait = max(wait, min(exc.retry_after_s, self.policy.max_retry_after_s))
        return wait


@dataclass(slots=True)
class CallStats:
    """What retrying one call took; goes into the result record."""

    attempts: int = 0
    retries: int = 0
    waited_s: float = 0.0
    last_error: str | None = None


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    gate: ReadinessGate | None = None,
    label: str = "",
    stats: CallStats | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``call`` until it succeeds, fails permanently, or the job deadline would pass.

    Raises the last `ServiceCallError`. ``sleep`` is injectable so tests can record the waits.
    """
    stats = stats if stats is not None else CallStats()
    started = time.monotonic()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.upcoming_sleep
        stats.retries += 1
        stats.waited_s += wait
        stats.last_error = str(exc)
        if gate is not None and isinstance(exc, ServiceCallError) and _trips_gate(exc):
            gate.trip(exc.message)
        logger.warning(
            "%s: attempt %d failed (%s); retrying in %.1f s", label, state.attempt_number, exc, wait
        )

    async def pause(seconds: float) -> None:
        if gate is None:
            await sleep(seconds)
        else:  # a service that was down: go as soon as /ready answers again
            await gate.pause(seconds, sleep)

    retrying = AsyncRetrying(
        retry=_ShouldRetry(policy),
        wait=_Wait(policy),
        stop=stop_before_delay(policy.job_deadline_s) | stop_after_attempt(policy.max_attempts),
        sleep=pause,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            stats.attempts += 1
            if gate is not None:
                remaining = policy.job_deadline_s - (time.monotonic() - started)
                await gate.wait_open(remaining)
            return await call()
    raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover


def _trips_gate(exc: ServiceCallError) -> bool:
    return (isinstance(exc, ServiceUnreachable) and exc.error_type == "unreachable") or (
        exc.status in _TRIP_STATUSES
    )
