"""Fixtures of the orchestrator tests: small benchmarks written on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.images import image_bytes


def write_manifest(folder: Path, rows: list[dict[str, str]], name: str = "manifest.jsonl") -> Path:
    """A JSONL manifest whose images are small PNGs next to it (one per row, distinct pixels)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(rows):
        image = folder / "images" / f"{index}.png"
        image.write_bytes(image_bytes(32, 32, seed=index))
        row.setdefault("image", f"images/{index}.png")
    manifest = folder / name
    manifest.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return manifest


@pytest.fixture
def small_benchmark(tmp_path: Path) -> Path:
    """6 items in 3 categories, one of them 物理."""
    rows = [
        {"id": f"{cat}-{i}", "category": cat, "instruction": f"{cat} edit number {i}"}
        for cat in ("color", "removal", "物理")
        for i in range(2)
    ]
    return write_manifest(tmp_path / "bench", rows)
