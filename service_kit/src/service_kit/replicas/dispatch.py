"""A service's dispatch: its admission queue in front of its replica set, as the lifespan and
the draining server drive it (service_kit.app.state.Hosted), the same for both services.

The service sets ``replica_set`` and ``queue`` and says how a batch runs on a replica (the
editor: one job on an idle worker; the judge: a batch on the least-loaded replica).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from service_kit.replicas.admission import AdmissionQueue
from service_kit.replicas.replica_set import Replica, ReplicaSet
from shared_schemas import ModelState

R = TypeVar("R", bound=Replica)
M = TypeVar("M")


class ReplicaDispatch(Generic[R, M]):
    """The queue's and the replica set's lifecycle (``M``: the service's LoadedModel)."""

    replica_set: ReplicaSet[R]
    queue: AdmissionQueue[Any, Any]

    async def start(self) -> None:
        """Spawn every replica and start taking work; returns at once (readiness says when
        they have loaded)."""
        await self.replica_set.start()
        self.queue.start()

    def start_draining(self) -> None:
        """Admit no new work (503) and report not ready; admitted work still runs."""
        self.replica_set.start_draining()
        self.queue.start_draining()

    def in_flight(self) -> int:
        """Work admitted and not answered yet: reserved, queued or running."""
        return self.queue.in_flight()

    def fail_remaining(self) -> None:
        """End the drain: answer everything still admitted 503; admit nothing more."""
        self.queue.fail_remaining()

    async def stop(self, drain_timeout_s: float) -> None:
        """Let admitted work finish (up to ``drain_timeout_s`` after the drain began), fail
        what is left, and stop every replica."""
        self.start_draining()
        await self.queue.stop(drain_timeout_s)
        await self.replica_set.stop()
        self.stopped()

    def stopped(self) -> None:
        """After the replicas stopped: answer anything they still held (503)."""

    def given_up(self) -> bool:
        """Every replica was given up on (the restart policy will not start any again)."""
        return self.replica_set.given_up()

    def refusal(self) -> str | None:
        """Why, when every replica was given up and at least one because its load was refused
        for its configuration; None otherwise (ReplicaSet.refusal)."""
        return self.replica_set.refusal()

    def model_state(self) -> ModelState:
        return self.replica_set.model_state()

    @property
    def model(self) -> M | None:
        """The model the replicas loaded, as its backend reported it; None before a load."""
        model: M | None = self.replica_set.model
        return model
