"""How a service hosts its replicas in the app: one lifespan for both services, and route
dependencies that read what the lifespan and the app factory keep in ``app.state``.

The lifespan resolves the devices (off the event loop: it may ask a subprocess how many GPUs
torch sees), lets the service build its dispatch over them (the editor's pool, the judge's
batcher and replicas), publishes it to the probes, the model routes and the draining server,
starts it, and on shutdown drains and stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Generic, Protocol, TypeVar

from fastapi import Depends, FastAPI, Request

from service_kit.decoding import DecodeGate
from service_kit.replicas import Replica, ReplicaSet
from service_kit.serving import Lifecycle
from service_kit.settings import ModelServiceSettings
from shared_schemas import ModelState

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Replica)
M = TypeVar("M")


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


class ReplicaDispatch(Generic[R, M]):
    """What a service's dispatch (the editor's pool, the judge's batch sender) leaves to its
    replica set: starting, draining, given-up, the model state and the loaded model (``M``: the
    service's LoadedModel). The service sets ``replica_set`` and adds its own dispatch."""

    replica_set: ReplicaSet[R]

    async def start(self) -> None:
        """Spawn every replica; returns at once (readiness says when they have loaded)."""
        await self.replica_set.start()

    def start_draining(self) -> None:
        """Admit no new work (503) and report not ready; admitted work still runs."""
        self.replica_set.start_draining()

    def given_up(self) -> bool:
        """Every replica was given up on (the restart policy will not start any again)."""
        return self.replica_set.given_up()

    def model_state(self) -> ModelState:
        return self.replica_set.model_state()

    @property
    def model(self) -> M | None:
        """The model the replicas loaded, as its backend reported it; None before a load."""
        model: M | None = self.replica_set.model
        return model


def replica_lifespan(
    settings: ModelServiceSettings,
    service: str,
    build: Callable[[FastAPI, list[str]], Hosted],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: ``build(app, devices)`` makes the service's dispatch (and may keep
    its parts in ``app.state`` for the routes); it is started here and stopped at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        devices = await asyncio.to_thread(settings.resolve_devices)
        logger.info("%s: model %s on %s", service, settings.model, ", ".join(devices))
        hosted = build(app, devices)
        app.state.readiness = app.state.replicas = hosted.replica_set
        app.state.lifecycle = hosted  # the server drains it on SIGTERM (service_kit.serving)
        await hosted.start()
        try:
            yield
        finally:
            await hosted.stop(settings.drain_timeout_s)

    return lifespan


def from_state(name: str) -> Any:
    """A route dependency on ``app.state.<name>``; annotate it with the type kept there:
    ``PoolDep = Annotated[WorkerPool, from_state("pool")]``."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    return Depends(get)


DecodeGateDep = Annotated[DecodeGate, from_state("decode_gate")]
