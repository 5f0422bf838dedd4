"""The two phases of a run: every edit, then every score. Both stream, resume and never stop."""

from orchestrator.phases.base import (
    PhaseContext,
    PhaseCounts,
    ServiceNotReady,
    is_finished,
    now_iso,
    wait_until_ready,
)
from orchestrator.phases.edit import EditPhase
from orchestrator.phases.score import ScorePhase, find_edited_file

__all__ = [
    "EditPhase",
    "PhaseContext",
    "PhaseCounts",
    "ScorePhase",
    "ServiceNotReady",
    "find_edited_file",
    "is_finished",
    "now_iso",
    "wait_until_ready",
]
