"""A real editor process on the tiny model with two CPU workers, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess


@pytest.fixture(scope="module")
def tiny_editor(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("editor-logs")
    service = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": "tiny",
            "EDITOR_DEVICES": "cpu,cpu",
            "EDITOR_CACHE_DIR": str(model_cache),
            **REUSE_FREED_MEMORY,
        },
        logs / "editor.log",
    )
    with service.running():
        yield service.url
