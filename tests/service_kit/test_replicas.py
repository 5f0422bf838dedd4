"""The replica set's state machine: load, release, jobs and failures in every order.

The worker processes are replaced at the supervisor seam by one that answers LoadModel and
ReleaseModel the way a worker does (in order, one event loop turn later); what is under test is
the set's serialisation, admission, readiness and model state.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from service_kit.errors import NotReady
from service_kit.replicas.metrics import ReplicaMetrics
from service_kit.replicas.replica_set import (
    LoadModel,
    ReleaseModel,
    Replica,
    ReplicaConfig,
    ReplicaLoadFailed,
    ReplicaReady,
    ReplicaReleased,
    ReplicaSet,
)
from shared_schemas import ModelState

pytestmark = pytest.mark.anyio


class FakeSupervisor:
    """Answers like a worker: ready (or released) after start, then each command in order."""

    def __init__(self, handles: list[Replica], **kwargs: Any) -> None:
        self.handles = handles
        self.args: Callable[[Replica], tuple[Any, ...]] = kwargs["args"]
        self.on_event: Callable[[Replica, Any], None] = kwargs["on_event"]
        self.on_exit: Callable[[Replica, int | None], None] = kwargs["on_exit"]
        self.sent: list[tuple[int, Any]] = []
        self.fail_loads = False
        self.refuse_loads = False

    def _later(self, handle: Replica, event: Any) -> None:
        asyncio.get_running_loop().call_soon(self.on_event, handle, event)

    def _loaded(self, handle: Replica) -> None:
        if self.refuse_loads:
            message = "UnsupportedOption: transformer_fp8 cannot run on cpu"
            self._later(handle, ReplicaLoadFailed(1, message, final=True))
        elif self.fail_loads:
            self._later(handle, ReplicaLoadFailed(1, "RuntimeError: no memory"))
        else:
            self._later(handle, ReplicaReady(1, "model", 0.01))

    async def start(self) -> None:
        for handle in self.handles:
            handle.state = "starting"
            load_now = self.args(handle)[4]
            if load_now:
                self._loaded(handle)
            else:
                self._later(handle, ReplicaReleased(0.0))

    def send(self, handle: Replica, message: Any) -> bool:
        self.sent.append((handle.index, message))
        if isinstance(message, LoadModel):
            self._loaded(handle)
        elif isinstance(message, ReleaseModel):
            self._later(handle, ReplicaReleased(0.01))
        return True

    async def stop(self) -> None:
        for handle in self.handles:
            handle.state = "stopped"


class Harness:
    def __init__(self, replicas: int = 2, load_on_start: bool = True) -> None:
        from prometheus_client import CollectorRegistry

        self.running_jobs = 0
        self.replicas = [Replica(i, "cpu") for i in range(replicas)]
        self.set: ReplicaSet[Replica] = ReplicaSet(
            self.replicas,
            target=lambda: None,
            spec=None,
            config=ReplicaConfig(
                name="test-worker", noun="model", load_on_start=load_on_start, load_timeout_s=5
            ),
            metrics=ReplicaMetrics("test", CollectorRegistry()),
            idle=lambda: self.running_jobs == 0,
            supervisor=FakeSupervisor,
        )

    @property
    def supervisor(self) -> FakeSupervisor:
        supervisor: FakeSupervisor = self.set._supervisor
        return supervisor

    async def started(self) -> Harness:
        await self.set.start()
        await self.until(lambda: all(r.state != "starting" for r in self.replicas))
        return self

    async def until(self, done: Callable[[], bool]) -> None:
        for _ in range(500):
            if done():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("state not reached")

    def admitted(self) -> bool:
        try:
            self.set.check_admission()
        except NotReady:
            return False
        return True

    def assert_consistent(self) -> None:
        """Ready exactly when jobs can run, and every replica agrees with the model state."""
        state = self.set.model_state()
        ready = self.set.readiness()
        states = {r.state for r in self.replicas}
        assert ready.model_state == state
        assert ready.ready == (state == "loaded")
        if state == "loaded":
            assert states == {"ready"} and self.admitted()
        if state == "released":
            assert states == {"released"} and not self.admitted()


async def test_a_set_that_loads_on_start_is_loaded_ready_and_admits_work() -> None:
    h = Harness()
    assert h.set.model_state() == "loading" and not h.admitted()
    await h.started()
    assert h.set.model_state() == "loaded" and h.set.readiness().ready and h.admitted()


async def test_a_set_started_released_refuses_work_with_the_released_state() -> None:
    h = await Harness(load_on_start=False).started()
    with pytest.raises(NotReady) as refused:
        h.set.check_admission()
    assert refused.value.model_state == "released"
    assert "POST /v1/model/load" in refused.value.message
    assert not h.set.readiness().ready


async def test_a_load_sent_while_a_release_waits_for_a_job_runs_after_the_release() -> None:
    h = await Harness().started()
    h.running_jobs = 1
    release = asyncio.create_task(h.set.release())
    await asyncio.sleep(0.01)
    assert not release.done()
    # A job arriving in between: refused, not queued.
    with pytest.raises(NotReady, match="released from its device") as refused:
        h.set.check_admission()
    assert refused.value.model_state == "released"
    load = asyncio.create_task(h.set.load())
    await asyncio.sleep(0.01)
    assert not load.done()  # the load waits for the release to finish
    h.running_jobs = 0
    await asyncio.wait_for(release, 5)
    await asyncio.wait_for(load, 5)
    commands = [type(m).__name__ for _, m in h.supervisor.sent]
    assert commands == ["ReleaseModel", "ReleaseModel", "LoadModel", "LoadModel"]
    assert h.set.model_state() == "loaded" and h.set.readiness().ready and h.admitted()
    h.assert_consistent()


async def test_a_release_sent_while_a_load_runs_ends_released() -> None:
    h = await Harness(load_on_start=False).started()
    load = asyncio.create_task(h.set.load())
    release = asyncio.create_task(h.set.release())
    await asyncio.wait_for(asyncio.gather(load, release), 5)
    assert h.set.model_state() == "released" and not h.admitted()
    h.assert_consistent()


async def test_a_job_submitted_while_loading_again_is_admitted_and_waits_for_a_replica() -> None:
    h = await Harness().started()
    await h.set.release()
    load = asyncio.create_task(h.set.load())
    await asyncio.sleep(0)
    assert h.set.model_state() == "loading"
    assert h.admitted()  # it has served before and is coming back: the job waits, not fails
    await asyncio.wait_for(load, 5)
    h.assert_consistent()


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["release", "load", "release2", "job"]))
)
async def test_any_interleaving_of_release_load_and_a_job_ends_consistent(
    order: tuple[str, ...],
) -> None:
    h = await Harness().started()
    h.running_jobs = 1  # a job is running when the race starts
    tasks: list[asyncio.Task[float]] = []
    last_handover = ""
    for step in order:
        if step == "job":
            h.running_jobs = 0  # it finishes
        else:
            method = h.set.load if step == "load" else h.set.release
            tasks.append(asyncio.create_task(method()))
            last_handover = step
        await asyncio.sleep(0)
    h.running_jobs = 0
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    expected: ModelState = "loaded" if last_handover == "load" else "released"
    assert h.set.model_state() == expected
    h.assert_consistent()


async def test_a_replica_that_cannot_load_says_why_and_a_given_up_set_is_failed() -> None:
    h = Harness(replicas=1)
    h.supervisor.fail_loads = True
    await h.set.start()
    await h.until(lambda: bool(h.replicas[0].failure))
    detail = h.set.readiness().detail
    assert "failed to load: RuntimeError: no memory" in detail
    assert h.set.model_state() == "loading" and not h.admitted()
    h.replicas[0].state = "failed"  # the restart policy gave up on it
    with pytest.raises(NotReady, match="keep failing, see the service log") as refused:
        h.set.check_admission()
    assert refused.value.model_state == "failed" and h.set.given_up()
    assert "keep failing" in h.set.readiness().detail


async def test_a_set_whose_every_load_was_refused_says_why_and_that_a_restart_will_not_help() -> (
    None
):
    h = Harness(replicas=2)
    h.supervisor.refuse_loads = True
    await h.set.start()
    await h.until(lambda: all(r.failure for r in h.replicas))
    assert "fix the configuration" in h.set.readiness().detail
    assert h.set.refusal() is None  # the workers have not exited yet
    for replica in h.replicas:  # the supervisor saw each exit with EXIT_CONFIG_REFUSED
        replica.state, replica.refused = "failed", True
    assert h.set.refusal() == "UnsupportedOption: transformer_fp8 cannot run on cpu"
    with pytest.raises(NotReady, match="transformer_fp8 cannot run on cpu") as refused:
        h.set.check_admission()
    assert refused.value.model_state == "failed" and h.set.given_up()
    assert "replica(s) [0, 1] not restarted: fix the configuration" in h.set.readiness().detail


async def test_a_refusal_on_one_replica_wins_once_the_others_are_given_up_for_failures() -> None:
    h = Harness(replicas=2)
    h.supervisor.fail_loads = True
    await h.set.start()
    await h.until(lambda: all(r.failure for r in h.replicas))
    h.replicas[0].state, h.replicas[0].refused = "failed", True  # refused: given up at once
    h.replicas[0].failure = "UnsupportedOption: transformer_fp8 cannot run on cpu"
    assert h.set.refusal() is None  # replica 1 is still being restarted: it may serve
    h.replicas[1].state = "failed"  # ... until the restart policy gives up on it
    assert h.set.given_up() and h.set.refusal() == (
        "UnsupportedOption: transformer_fp8 cannot run on cpu; replica(s) [1] were given up on "
        "after repeated failures"
    )


async def test_a_set_given_up_for_failures_alone_has_no_configuration_refusal() -> None:
    h = Harness(replicas=2)
    h.supervisor.fail_loads = True
    await h.set.start()
    await h.until(lambda: all(r.failure for r in h.replicas))
    for replica in h.replicas:
        replica.state = "failed"
    assert h.set.given_up() and h.set.refusal() is None


async def test_draining_is_not_ready_and_refuses_work_while_the_model_stays_loaded() -> None:
    h = await Harness().started()
    h.set.start_draining()
    assert h.set.model_state() == "loaded"
    assert not h.set.readiness().ready and h.set.readiness().detail == "draining"
    assert not h.admitted()


async def test_the_replica_metrics_name_each_replica_by_index_and_device() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics = ReplicaMetrics("svc", registry)
    replicas = [Replica(0, "cuda:0", state="ready", restarts=2)]
    metrics.watch(lambda: replicas)
    text = generate_latest(registry).decode()
    assert 'svc_replica_restarts_total{device="cuda:0",replica="0"} 2.0' in text
    assert 'svc_replica_state{device="cuda:0",replica="0",state="ready"} 1.0' in text
    assert 'svc_replica_state{device="cuda:0",replica="0",state="released"} 0.0' in text
