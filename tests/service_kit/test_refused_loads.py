"""A load refused for its configuration is final; any other load failure is restarted.

Real worker processes under the real supervisor, each running the real ReplicaRuntime over a
backend that fails its load (the fault seam); what is under test is how the failure travels to
the API process and what the supervisor does with it.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import Any

import pytest

from service_kit.models.refusals import EXIT_CONFIG_REFUSED, ConfigurationRefused
from service_kit.replicas.processes import RestartPolicy, Supervisor, WorkerHandle
from service_kit.replicas.replica_set import ReplicaLoadFailed
from service_kit.replicas.worker_runtime import ReplicaRuntime

pytestmark = pytest.mark.anyio


class RefusingBackend:
    def load(self, device: str) -> Any:
        raise ConfigurationRefused(f"fused_attention cannot run on {device}")

    def release(self) -> None: ...


class UnbuildableBackend:
    """Refuses its settings when it is built, before any load (a missing endpoint URL)."""

    def __init__(self) -> None:
        raise ConfigurationRefused("the endpoint needs a base URL")

    def load(self, device: str) -> Any: ...

    def release(self) -> None: ...


class CrashingBackend:
    def load(self, device: str) -> Any:
        raise RuntimeError(f"out of memory on {device}")

    def release(self) -> None: ...


BACKENDS: dict[str, type[Any]] = {
    "refusing": RefusingBackend,
    "unbuildable": UnbuildableBackend,
    "crashing": CrashingBackend,
}


def _worker(backend: str, _jobs: Connection, events: Connection) -> None:
    runtime = ReplicaRuntime("test worker", "cpu", 1, "warning", events, BACKENDS[backend])
    runtime.start(load_on_start=True)


async def _supervise(backend: str, max_restarts: int) -> tuple[WorkerHandle, list[Any], list[Any]]:
    """Run one worker until it is given up on; returns it, its events and its exit codes."""
    handle = WorkerHandle(0, "cpu")
    events: list[Any] = []
    exits: list[Any] = []
    supervisor = Supervisor(
        [handle],
        target=_worker,
        args=lambda _h: (backend,),
        name="test-worker",
        policy=RestartPolicy(max_restarts=max_restarts, backoff_s=(0.05,)),
        on_event=lambda _h, event: events.append(event),
        on_exit=lambda _h, code: exits.append(code),
        interval_s=0.05,
    )
    await supervisor.start()
    try:
        for _ in range(1200):  # at most 60 s
            if handle.state == "failed" and events and len(events) >= len(exits):
                break
            await asyncio.sleep(0.05)
    finally:
        await supervisor.stop()
    return handle, events, exits


async def test_a_load_refused_for_its_configuration_is_given_up_after_one_attempt() -> None:
    handle, events, exits = await _supervise("refusing", max_restarts=5)
    assert handle.state == "stopped" and handle.refused  # failed, then stopped with the rest
    assert exits == [EXIT_CONFIG_REFUSED] and handle.restarts == 0
    assert events == [
        ReplicaLoadFailed(
            events[0].pid, "ConfigurationRefused: fused_attention cannot run on cpu", final=True
        )
    ]


async def test_a_backend_that_refuses_its_configuration_when_built_is_given_up_at_once() -> None:
    handle, events, exits = await _supervise("unbuildable", max_restarts=5)
    assert handle.refused and exits == [EXIT_CONFIG_REFUSED] and handle.restarts == 0
    assert events == [
        ReplicaLoadFailed(
            events[0].pid, "ConfigurationRefused: the endpoint needs a base URL", final=True
        )
    ]


async def test_any_other_load_failure_is_restarted_until_the_policy_gives_up() -> None:
    handle, events, exits = await _supervise("crashing", max_restarts=1)
    assert not handle.refused and handle.restarts == 1
    assert len(exits) == 2 and EXIT_CONFIG_REFUSED not in exits
    assert all(isinstance(e, ReplicaLoadFailed) and not e.final for e in events)
    assert "RuntimeError: out of memory on cpu" in events[0].message
