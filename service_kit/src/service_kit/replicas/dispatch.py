"""What a service's dispatch (the editor's pool, the judge's batch sender) leaves to its replica
set: starting, draining, given-up, the model state and the loaded model."""

from __future__ import annotations

from typing import Generic, TypeVar

from service_kit.replicas.replica_set import Replica, ReplicaSet
from shared_schemas import ModelState

R = TypeVar("R", bound=Replica)
M = TypeVar("M")


class ReplicaDispatch(Generic[R, M]):
    """The replica set's part of a dispatch (``M``: the service's LoadedModel). The service
    sets ``replica_set`` and adds its own dispatch."""

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
