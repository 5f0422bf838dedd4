"""Benchmarks published as a JSON index beside a folder of image files (KRIS-Bench, ImgEdit,
RISEBench): the shared part of their loaders.

An item's main input image is ``Item.source`` (relative to the benchmark's root); further images
an item has (more inputs, a reference answer image) are named in ``Item.extra`` under
``EXTRA_IMAGE_KEYS`` and read with `FolderBenchmark.extra_image`. Every path stays inside the
root unless ``allow_outside_paths``, as with manifests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from orchestrator.benchmarks.base import (
    OUTSIDE_HINT,
    Benchmark,
    image_problem,
    resolve_inside,
)
from orchestrator.benchmarks.items import BenchmarkError, Item

# Item.extra keys that hold image paths (relative to the root): a list of further inputs, and a
# reference (ground-truth) image the judge may be shown.
INPUT_IMAGES = "input_images"
REFERENCE_IMAGE = "reference_image"
EXTRA_IMAGE_KEYS = (INPUT_IMAGES, REFERENCE_IMAGE)


def extra_image_paths(item: Item, key: str) -> list[str]:
    """The paths an item holds under one of EXTRA_IMAGE_KEYS (one path or a list), in order."""
    value = item.extra.get(key)
    return [value] if isinstance(value, str) else [str(p) for p in value or []]


def image_paths(item: Item) -> list[str]:
    """Every image path an item names: its source, further inputs, then its reference."""
    return [item.source] + [
        path for key in EXTRA_IMAGE_KEYS for path in extra_image_paths(item, key)
    ]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BenchmarkError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read: {exc}") from None


def text_field(row: dict[str, Any], keys: Sequence[str], where: str) -> str:
    """The first of ``keys`` the row has as non-empty text (a clear error otherwise)."""
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise BenchmarkError(f"{where}: missing {' or '.join(repr(k) for k in keys)}")


class FolderBenchmark(Benchmark):
    """Items whose images are files under ``root`` (paths checked at load and at reading)."""

    format = "folder"

    def __init__(
        self,
        path: Path,
        root: Path,
        items: Sequence[Item],
        *,
        name: str | None = None,
        allow_outside_paths: bool = False,
    ) -> None:
        super().__init__(path, items, name=name)
        self.root = root
        self._allow_outside = allow_outside_paths

    def _read(self, item: Item, relpath: str) -> bytes:
        try:
            path = resolve_inside(self.root, relpath, allow_outside=self._allow_outside)
        except ValueError as exc:
            raise BenchmarkError(f"item {item.id!r}: {exc}; {OUTSIDE_HINT}") from None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise BenchmarkError(f"item {item.id!r}: cannot read image {path}: {exc}") from None

    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        for item in items:
            yield item, self._read(item, item.source)

    def extra_images(self, item: Item) -> dict[str, list[bytes]]:
        """The item's further images by role: ``input_images`` (more inputs, in order) and
        ``reference_image`` (one, when the benchmark has a reference answer image)."""
        found: dict[str, list[bytes]] = {}
        for key in EXTRA_IMAGE_KEYS:
            paths = extra_image_paths(item, key)
            if paths:
                found[key] = [self._read(item, p) for p in paths]
        return found

    def input_count(self, item: Item) -> int:
        return 1 + len(extra_image_paths(item, INPUT_IMAGES))

    def input_images(self, item: Item) -> list[bytes]:
        return [self._read(item, path) for path in extra_image_paths(item, INPUT_IMAGES)]

    def reference_image(self, item: Item) -> bytes | None:
        value = item.extra.get(REFERENCE_IMAGE)
        return self._read(item, value) if isinstance(value, str) and value else None


def check_files(root: Path, items: Sequence[Item], *, allow_outside: bool) -> None:
    """Every image an item names exists inside ``root``; all offenders are named together."""
    problems: list[str] = []
    for item in items:
        for relpath in image_paths(item):
            try:
                path = resolve_inside(root, relpath, allow_outside=allow_outside)
            except ValueError as exc:
                problems.append(f"item {item.id!r}: {exc}")
                continue
            problem = image_problem(path, formats=False)  # published: see head_problem
            if problem is not None:
                problems.append(f"item {item.id!r}: {problem}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        hint = f" ({OUTSIDE_HINT})" if any("leads outside" in p for p in problems) else ""
        raise BenchmarkError(f"{len(problems)} image problem(s) in {root}{hint}:\n  {shown}{more}")
