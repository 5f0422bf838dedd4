"""Suite-wide settings: no hub access, one cache of built tiny models per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where services build their tiny models: once per test session, shared by every service."""
    yield tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
