"""One GPU for both phases: hand the device from one service to the other, and time it.

A single 80 GB GPU holds the editor or the judge, not both. With ``share_gpu`` a phase calls
`GpuSharing.give_to` before its first job: the other service releases its model first (if it holds
one), then this one loads (if it was released). Nothing is asked of a service already in the
wanted state, and a phase with nothing to do never calls it. Each hand-over that did something is
one `Handover`: the seconds each service reports and the wall time seen from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.clients import EditorClient, ModelState, RewardClient
from orchestrator.progress import PhaseProgress
from orchestrator.retry import RetryPolicy, call_with_retry
from shared_schemas import ModelStateResponse

logger = logging.getLogger(__name__)

# Wanting the GPU for itself, a service not ready for another reason (loading on start,
# restarting) may hold device memory too: it is released as well.
_HOLDS_MEMORY: frozenset[ModelState] = frozenset({"loaded", "not_ready"})


@dataclass(frozen=True, slots=True)
class Handover:
    """One hand-over of the GPU. ``release_s``/``load_s`` are the services' own figures (None
    when that service needed nothing); ``wall_s`` is the whole hand-over as seen from here."""

    source: str
    target: str
    release_s: float | None
    load_s: float | None
    wall_s: float
    started_at: str
    finished_at: str
    released: bool | None
    loaded: bool | None

    def as_record(self) -> dict[str, Any]:
        """The entry of provenance.json's and summary.json's ``handovers``."""
        return {
            "from": self.source,
            "to": self.target,
            "release_s": _round(self.release_s),
            "load_s": _round(self.load_s),
            "wall_s": _round(self.wall_s),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "released": self.released,
            "loaded": self.loaded,
        }

    def describe(self) -> str:
        release = "-" if self.release_s is None else f"{self.release_s:.1f} s"
        load = "-" if self.load_s is None else f"{self.load_s:.1f} s"
        return (
            f"GPU hand-over {self.source} -> {self.target}: release {release}, load {load}, "
            f"{self.wall_s:.1f} s in all"
        )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class GpuSharing:
    """Hands the one GPU to whichever service the next phase needs."""

    def __init__(
        self,
        editor: EditorClient,
        reward: RewardClient,
        *,
        policy: RetryPolicy,
        progress: PhaseProgress,
        on_handover: Callable[[Handover], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clients: dict[str, EditorClient | RewardClient] = {
            "editor": editor,
            "reward": reward,
        }
        self.policy = policy
        self.progress = progress
        self._on_handover = on_handover
        self._sleep = sleep
        self.handovers: list[Handover] = []

    async def give_to(self, service: str) -> Handover | None:
        """Release the other service's model if it holds one, then load ``service``'s if it was
        released. Returns what was done, or None when both were already as wanted."""
        target = self._clients[service]
        other = next(c for name, c in self._clients.items() if name != service)
        started, started_at = time.monotonic(), _now_iso()
        release = load = None
        other_state = await other.model_state()
        if other_state in _HOLDS_MEMORY:
            self.progress.note(f"GPU hand-over: releasing the {other.service}'s model")
            release = await self._call(other.release_model, f"{other.service} release")
        elif other_state == "unreachable":
            logger.warning(
                "GPU hand-over: the %s at %s does not answer; taking it as holding no GPU memory",
                other.service,
                other.base_url,
            )
        if await target.model_state() == "released":
            self.progress.note(f"GPU hand-over: loading the {target.service}'s model")
            load = await self._call(target.load_model, f"{target.service} load")
        if release is None and load is None:
            return None
        handover = Handover(
            source=other.service,
            target=target.service,
            release_s=release.seconds if release else None,
            load_s=load.seconds if load else None,
            wall_s=time.monotonic() - started,
            started_at=started_at,
            finished_at=_now_iso(),
            released=not release.loaded if release else None,
            loaded=load.loaded if load else None,
        )
        logger.info("%s", handover.describe())
        self.progress.note(handover.describe())
        self.handovers.append(handover)
        if self._on_handover is not None:
            self._on_handover(handover)
        return handover

    async def _call(
        self, call: Callable[[], Awaitable[ModelStateResponse]], label: str
    ) -> ModelStateResponse:
        return await call_with_retry(call, policy=self.policy, label=label, sleep=self._sleep)
