"""One replica runtime for both services, API-process side: the replica set.

A replica is one worker process on one device holding one copy of the model. The set spawns and
supervises them (service_kit.replicas.processes.Supervisor) and owns, once for both services:

- their lifecycle events (ready, failed to load, released) and states;
- the model's wanted state and its hand-over: ``release`` and ``load`` run one at a time, each to
  its end, so any interleaving of release, load and jobs ends in one consistent state (a load sent
  while a release waits for a running job runs after it, and its answer is the final state);
- admission (``check_admission``: a request is refused with a 503 that carries the model state,
  never queued where nothing will serve it), readiness and "given up";
- the replica metrics (service_kit.replicas.metrics), the same names and labels for both services.

Each service keeps only its own dispatch on top: the editor runs one job per replica with a cancel
flag, the judge sends batches to the least-loaded replica (the model LitServe follows: one
``inference_worker`` lifecycle under both its single and batched loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from service_kit.errors import NotReady
from service_kit.replicas.metrics import ReplicaMetrics
from service_kit.replicas.processes import (
    RestartPolicy,
    Supervisor,
    WorkerHandle,
    cpu_threads_per_worker,
)
from shared_schemas import ModelState, ReadyResponse

logger = logging.getLogger(__name__)

Wanted = Literal["loaded", "released"]


# ------------------------------------------------------------------ messages (both directions)


@dataclass(frozen=True, slots=True)
class ReleaseModel:
    """API -> worker: free the model's device memory (hand the GPU to another service)."""


@dataclass(frozen=True, slots=True)
class LoadModel:
    """API -> worker: load the model again after a ReleaseModel (or a start without loading)."""


@dataclass(frozen=True, slots=True)
class ReplicaReady:
    pid: int
    model: Any  # the service's LoadedModel
    load_s: float


@dataclass(frozen=True, slots=True)
class ReplicaLoadFailed:
    pid: int
    message: str
    final: bool = False  # refused for its configuration: the worker exits, never restarted


@dataclass(frozen=True, slots=True)
class ReplicaReleased:
    seconds: float


LifecycleEvent = ReplicaReady | ReplicaLoadFailed | ReplicaReleased


@dataclass(eq=False)
class Replica(WorkerHandle):
    """One replica as the API process sees it; services subclass it for their dispatch state.

    ``state`` (set here and by the supervisor): starting, ready, released, restarting, failed,
    stopped."""

    model: Any = None
    load_s: float | None = None
    failure: str = ""  # why its last load failed
    ever_ready: bool = False


R = TypeVar("R", bound=Replica)


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    name: str  # process and log name, e.g. "editor-worker"
    noun: str  # what the model is called in messages, e.g. "model", "judge model"
    log_level: str = "info"
    load_on_start: bool = True
    load_timeout_s: float = 3600.0
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    monitor_interval_s: float = 0.25


class ReplicaSet(Generic[R]):
    """Spawns and watches the replicas; see the module docstring.

    ``target(index, device, cpu_threads, spec, load_on_start, log_level, *extra_args(replica),
    jobs, events)`` runs in each worker (service_kit.replicas.worker_runtime.ReplicaRuntime serves
    it).
    ``on_event(replica, event)`` gets the service's own events (job results); ``on_exit(replica)``
    fails what a replica held when it exited unasked; ``on_change()`` runs after every event, exit
    and monitor pass (dispatch); ``idle()`` says no admitted work is left (a release waits for it).
    """

    def __init__(
        self,
        replicas: list[R],
        *,
        target: Callable[..., None],
        spec: Any,
        config: ReplicaConfig,
        metrics: ReplicaMetrics,
        idle: Callable[[], bool],
        on_event: Callable[[R, Any], None] = lambda _r, _e: None,
        on_exit: Callable[[R], None] = lambda _r: None,
        on_change: Callable[[], None] = lambda: None,
        on_tick: Callable[[float], None] = lambda _now: None,
        extra_args: Callable[[R], tuple[Any, ...]] = lambda _r: (),
        supervisor: Callable[..., Any] = Supervisor,
    ) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one replica")
        self.replicas = replicas
        self.config = config
        self.metrics = metrics
        self._target = target
        self._spec = spec
        self._idle = idle
        self._on_event = on_event
        self._on_exit = on_exit
        self._on_change = on_change
        self._on_tick = on_tick
        self._extra_args = extra_args
        self._wanted: Wanted = "loaded" if config.load_on_start else "released"
        self._draining = False
        self._handover = asyncio.Lock()  # release and load: one at a time, each to its end
        self._change = asyncio.Event()
        metrics.watch(lambda: self.replicas)
        self._supervisor = supervisor(
            replicas,
            target=target,
            args=self._args,
            name=config.name,
            policy=config.policy,
            on_event=self._event,
            on_exit=self._exited,
            on_tick=self._tick,
            interval_s=config.monitor_interval_s,
        )

    def _args(self, replica: R) -> tuple[Any, ...]:
        devices = [r.device for r in self.replicas]
        threads = cpu_threads_per_worker(devices) if replica.device == "cpu" else None
        load_now = self._wanted == "loaded"
        common = (replica.index, replica.device, threads, self._spec, load_now)
        return (*common, self.config.log_level, *self._extra_args(replica))

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Spawn every replica; returns at once (readiness says when they have loaded)."""
        await self._supervisor.start()

    async def stop(self) -> None:
        """Stop every worker (politely, then by force)."""
        self._draining = True
        await self._supervisor.stop()
        self._notify()

    def start_draining(self) -> None:
        """Admit nothing new (503) and report not ready; admitted work still runs."""
        self._draining = True
        self._notify()

    @property
    def draining(self) -> bool:
        return self._draining

    def send(self, replica: R, message: Any) -> bool:
        """Send to a replica's worker; False if it is gone (its exit is handled by the monitor)."""
        return bool(self._supervisor.send(replica, message))

    def given_up(self) -> bool:
        """Every replica was given up on (the restart policy will not start any again)."""
        return all(r.state == "failed" for r in self.replicas)

    def refusal(self) -> str | None:
        """Why, when every replica was given up on and at least one of them because its load was
        refused for its configuration; None otherwise. The refusal wins over the others'
        failures: whatever a restart of the service does for those, the refused replica will
        not serve until the configuration is fixed (exit 78, not 75; docs/DEPLOY.md)."""
        refused = [r for r in self.replicas if r.refused]
        if not refused or not self.given_up():
            return None
        why = next(
            (r.failure for r in refused if r.failure),
            f"the {self.config.noun}'s configuration was refused (see the service log)",
        )
        others = [r.index for r in self.replicas if not r.refused]
        if others:
            why += f"; replica(s) {others} were given up on after repeated failures"
        return why

    def serving(self) -> list[R]:
        return [r for r in self.replicas if r.state == "ready"]

    # ----------------------------------------------------------------- hand-over

    async def release(self) -> float:
        """Free every replica's device memory once the admitted work is answered; returns seconds.

        New work is refused (503, model_state released) from the moment this is called."""
        started = time.monotonic()
        async with self._handover:
            self._wanted = "released"
            self._notify()
            await self._until(self._idle, timeout_s=None)
            targets = [r for r in self.replicas if r.state in ("ready", "starting")]
            for replica in targets:
                self.send(replica, ReleaseModel())
            await self._until(
                lambda: all(r.state in ("released", "failed", "restarting") for r in targets)
            )
        return time.monotonic() - started

    async def load(self) -> float:
        """Load the model on every released replica; returns seconds once they answer."""
        started = time.monotonic()
        async with self._handover:
            self._wanted = "loaded"
            self._notify()
            # A worker that has just started says first whether it loaded or waits for this call.
            await self._until(
                lambda: all(r.state in ("ready", "released", "failed") for r in self.replicas)
            )
            targets = [r for r in self.replicas if r.state == "released"]
            for replica in targets:
                replica.state = "starting"
                self.send(replica, LoadModel())
            await self._until(lambda: all(r.state in ("ready", "failed") for r in targets))
        seconds = time.monotonic() - started
        self.metrics.handover_seconds.labels("load").observe(seconds)
        return seconds

    async def wait_change(self, timeout_s: float | None) -> None:
        """Until a replica changes state or an event arrives (or ``timeout_s`` passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._change.wait(), timeout_s)

    async def _until(self, done: Callable[[], bool], timeout_s: float | None = -1.0) -> None:
        limit = self.config.load_timeout_s if timeout_s == -1.0 else timeout_s
        deadline = None if limit is None else time.monotonic() + limit
        while not done() and (deadline is None or time.monotonic() < deadline):
            await self.wait_change(timeout_s=0.05)

    def _notify(self) -> None:
        # Wake every waiter at once, then arm a fresh event for the next change.
        self._change.set()
        self._change = asyncio.Event()

    # ----------------------------------------------------------------- events

    def _event(self, replica: R, event: Any) -> None:
        if isinstance(event, ReplicaReady):
            replica.model, replica.pid, replica.load_s = event.model, event.pid, event.load_s
            replica.state, replica.ever_ready, replica.failure = "ready", True, ""
            self.metrics.model_load_seconds.observe(event.load_s)
            logger.info(
                "%s %d ready on %s (pid %d, %.1fs)",
                self.config.name,
                replica.index,
                replica.device,
                event.pid,
                event.load_s,
            )
        elif isinstance(event, ReplicaLoadFailed):
            replica.failure = event.message
            replica.refused = replica.refused or event.final
            logger.error("%s %d failed to load: %s", self.config.name, replica.index, event.message)
            # The process exits next; the supervisor restarts it with backoff, or, when the load
            # was refused for its configuration (exit code EXIT_CONFIG_REFUSED), gives it up.
        elif isinstance(event, ReplicaReleased):
            replica.state = "released"
            if event.seconds:
                self.metrics.handover_seconds.labels("release").observe(event.seconds)
        else:
            self._on_event(replica, event)
        self._notify()
        self._on_change()

    def _exited(self, replica: R, _exitcode: int | None) -> None:
        # No dispatch here: the supervisor marks the replica restarting (or failed) only after
        # this returns; its monitor pass dispatches next (_tick).
        self._on_exit(replica)
        self._notify()

    def _tick(self, now: float) -> None:
        self._on_tick(now)
        self._notify()
        self._on_change()

    # ----------------------------------------------------------------- admission and views

    def check_admission(self) -> None:
        """Raise NotReady (503, with the model state) unless new work can be served: the model
        is wanted, some replica has loaded, and not every replica was given up on. A replica
        that is restarting (or loading again) will serve what is queued for it."""
        if self._draining:
            raise NotReady(
                "the service is shutting down", retry_after_s=30, model_state=self.model_state()
            )
        state = self.model_state()
        if state == "released":
            raise NotReady(self._detail(), model_state=state)
        if self.given_up():
            raise NotReady(self._detail(), retry_after_s=30, model_state="failed")
        if not any(r.ever_ready for r in self.replicas):
            raise NotReady(self._detail(), retry_after_s=10, model_state=state)

    def model_state(self) -> ModelState:
        """released (wanted so), failed (a replica was given up on), loaded (every replica has
        loaded once and one serves), or loading."""
        if self._wanted == "released":
            return "released"
        if any(r.state == "failed" for r in self.replicas):
            return "failed"
        if all(r.ever_ready for r in self.replicas) and self.serving():
            return "loaded"
        return "loading"

    @property
    def loaded(self) -> bool:
        return self.model_state() == "loaded"

    @property
    def model(self) -> Any:
        return next((r.model for r in self.replicas if r.model is not None), None)

    @property
    def load_s(self) -> float | None:
        times = [r.load_s for r in self.replicas if r.load_s is not None]
        return max(times) if times else None

    def readiness(self) -> ReadyResponse:
        """Ready exactly when the model is loaded and the service is not draining."""
        state = self.model_state()
        return ReadyResponse(
            ready=state == "loaded" and not self._draining,
            detail="draining" if self._draining else self._detail(),
            workers_ready=len(self.serving()),
            workers_total=len(self.replicas),
            model_state=state,
        )

    def _detail(self) -> str:
        noun, total = self.config.noun, len(self.replicas)
        failed = [r for r in self.replicas if r.state == "failed"]
        refused = [r for r in self.replicas if r.refused]
        loading = [r for r in self.replicas if not r.ever_ready]
        serving = len(self.serving())
        if self._wanted == "released":
            return f"the {noun} is released from its device(s); POST /v1/model/load first"
        if refused:
            first, which = refused[0], [r.index for r in refused]
            return (
                f"the {noun} was refused on {first.device}: {first.failure}; replica(s) {which} "
                "not restarted: fix the configuration"
            )
        if failed:
            first, which = failed[0], [r.index for r in failed]
            why = (
                f"failed to load on {first.device}: {first.failure}"
                if first.failure
                else (f"keeps exiting on {first.device}")
            )
            return f"the {noun} {why}; replica(s) {which} keep failing, see the service log"
        if loading:
            tried = [r.failure for r in loading if r.failure]
            if tried:
                return f"the {noun} failed to load: {tried[0]} (trying again)"
            return f"loading the {noun}: {total - len(loading)} of {total} replicas ready"
        if serving == 0:
            return f"every replica of the {noun} is restarting or loading"
        return f"{serving} of {total} replicas serving on {', '.join(self.devices)}"

    @property
    def devices(self) -> list[str]:
        return [r.device for r in self.replicas]
