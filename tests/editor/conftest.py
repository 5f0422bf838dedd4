"""A real editor process on the tiny model with two CPU workers, shared by a test module.

The model runs behind tests.orchestrator.held_backends' HeldEditBackend (the built-in diffusers
backend, as is): an edit whose instruction carries a hold tag waits on its worker until the test
opens the gate, so a test can know a job occupies a worker; every other edit runs at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess


@dataclass(frozen=True)
class EditorHolds:
    """Where ``tiny_editor``'s held edits wait (``gate_dir/NAME``) and report (``journal``)."""

    gate_dir: Path
    journal: Path


@pytest.fixture(scope="module")
def editor_holds(tmp_path_factory: pytest.TempPathFactory) -> EditorHolds:
    folder = tmp_path_factory.mktemp("editor-holds")
    (folder / "gates").mkdir()
    return EditorHolds(folder / "gates", folder / "journal.jsonl")


@pytest.fixture(scope="module")
def tiny_editor(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory, editor_holds: EditorHolds
) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("editor-logs")
    holds = {"gate_dir": str(editor_holds.gate_dir), "journal": str(editor_holds.journal)}
    service = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": "tiny",
            "EDITOR_DEVICES": "cpu,cpu",
            "EDITOR_CACHE_DIR": str(model_cache),
            "EDITOR_BACKEND": "tests.orchestrator.held_backends:HeldEditBackend",
            "EDITOR_BACKEND_OPTIONS": json.dumps(holds),
            **REUSE_FREED_MEMORY,
        },
        logs / "editor.log",
    )
    with service.running():
        yield service.url
