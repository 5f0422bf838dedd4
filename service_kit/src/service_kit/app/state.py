"""What a service's app keeps for its routes, probes and server: one typed object.

The app factory makes a ``ServiceState`` (settings, metrics, API keys, the decode gate) and keeps
it as ``app.state.service``; the lifespan sets its ``hosted`` (the service's dispatch over its
replicas: the editor's pool, the judge's batch sender) once the devices are known. Routes read it
through typed dependencies (``state_dep``, ``hosted_dep``), never through string keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Protocol, TypeVar

from fastapi import Depends, Request
from starlette.applications import Starlette

from service_kit.errors import NotReady
from service_kit.http.auth import ApiKeys
from service_kit.http.metrics import ServiceMetrics
from service_kit.images.decode_gate import DecodeGate
from service_kit.replicas.replica_set import ReplicaSet
from service_kit.settings import ModelServiceSettings


class Lifecycle(Protocol):
    """What the draining server drives (service_kit.app.server). Every method is cheap and
    called on the event loop."""

    def start_draining(self) -> None:
        """Admit no new work from now on, and report not ready."""

    def in_flight(self) -> int:
        """Jobs admitted and not yet answered (queued, running, or being validated)."""

    def fail_remaining(self) -> None:
        """Answer every job still admitted with 503: the drain is over."""

    def given_up(self) -> bool:
        """Whether every worker has been given up on (none will be restarted)."""

    def refusal(self) -> str | None:
        """Why, when every worker was given up and at least one because its model load was
        refused for its configuration (a restart will not help); None otherwise."""


class Hosted(Lifecycle, Protocol):
    """A service's dispatch over its replica set, as the lifespan and the server drive it."""

    @property
    def replica_set(self) -> ReplicaSet[Any]:
        """The replicas: /ready, /v1/model/release and /load read and drive them."""

    async def start(self) -> None:
        """Start every replica; returns at once (readiness says when they have loaded)."""

    async def stop(self, drain_timeout_s: float) -> None:
        """Let admitted work finish for up to ``drain_timeout_s`` (a drain the server began
        already counts), answer what is left 503, and stop every replica."""


H = TypeVar("H", bound=Hosted)
T = TypeVar("T")


@dataclass(eq=False)
class ServiceState(Generic[H]):
    """Everything the app keeps: set up by the factory, ``hosted`` by the lifespan."""

    settings: ModelServiceSettings
    metrics: ServiceMetrics
    api_keys: ApiKeys
    decode_gate: DecodeGate = field(default_factory=DecodeGate)
    hosted: H | None = None

    def dispatch(self) -> H:
        """The service's dispatch; 503 before the lifespan has built it."""
        if self.hosted is None:
            raise NotReady("the service is starting", retry_after_s=5)
        return self.hosted


def service_state(app: Starlette) -> ServiceState[Any]:
    """The app's state, as its factory (service_kit.app.factory) kept it."""
    state: ServiceState[Any] = app.state.service
    return state


def state_dep(read: Callable[[ServiceState[Any]], T]) -> Any:
    """A route dependency on part of the state: ``Annotated[EditorSettings,
    state_dep(lambda s: s.settings)]``."""

    def get(request: Request) -> T:
        return read(service_state(request.app))

    return Depends(get)


def hosted_dep(read: Callable[[Any], T]) -> Any:
    """A route dependency on part of the service's dispatch (503 before it is built):
    ``Annotated[WorkerPool, hosted_dep(lambda pool: pool)]``."""

    def get(request: Request) -> T:
        return read(service_state(request.app).dispatch())

    return Depends(get)


DecodeGateDep = Annotated[DecodeGate, state_dep(lambda state: state.decode_gate)]
