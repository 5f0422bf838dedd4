"""What every benchmark format gives the runner: items (metadata only) and a stream of images.

Items are small and all kept in memory (10,000 items are a few MB); images are read only as they
are needed, in benchmark order, by `Benchmark.iter_images`, so memory stays flat as a benchmark
grows.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.benchmarks.reporting import Reporting


class BenchmarkError(ValueError):
    """A benchmark that cannot be read, with a message that says where and why."""


def normalize_text(value: str) -> str:
    """NFC, so a category typed on the command line matches the one in the file (物理 == 物理)."""
    return unicodedata.normalize("NFC", value.strip())


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark item. ``source`` says where its image lives (for people, not for reading)."""

    id: str
    category: str
    instruction: str
    source: str
    language: str | None = None
    hints: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Benchmark(ABC):
    """A loaded benchmark: its items, and a way to stream their images."""

    format: str = "benchmark"

    def __init__(self, path: Path, items: Sequence[Item], name: str | None = None) -> None:
        self.path = path
        self.items = list(items)
        _check_unique_ids(self.items, path)
        if name is None:
            # A manifest called manifest.jsonl is named after its folder.
            name = path.parent.name if path.is_file() and path.stem == "manifest" else path.stem
        self.name = name
        from orchestrator.benchmarks.reporting import Reporting  # it imports this module

        self.reporting: Reporting = Reporting()

    @property
    def categories(self) -> list[str]:
        return sorted({item.category for item in self.items})

    @abstractmethod
    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        """Yield ``(item, encoded image bytes)`` for the given items, one at a time."""

    def fingerprint(self) -> str:
        """sha256 of the benchmark's metadata (ids, categories, instructions): for provenance."""
        digest = hashlib.sha256()
        for item in self.items:
            for part in (item.id, item.category, item.instruction, item.language or ""):
                digest.update(part.encode())
                digest.update(b"\0")
        return digest.hexdigest()


def _check_unique_ids(items: Sequence[Item], path: Path) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise BenchmarkError(f"{path}: item id {item.id!r} appears more than once")
        seen.add(item.id)


def select_items(
    items: Sequence[Item],
    *,
    categories: Sequence[str] = (),
    languages: Sequence[str] = (),
    ids: Sequence[str] = (),
    limit: int | None = None,
    limit_per_category: int | None = None,
) -> list[Item]:
    """Filter in benchmark order. Unknown categories/languages are an error that lists the known."""
    wanted_categories = {normalize_text(c) for c in categories}
    known = {item.category for item in items}
    unknown = sorted(wanted_categories - known)
    if unknown:
        raise BenchmarkError(
            f"unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
            f"this benchmark has: {', '.join(sorted(known))}"
        )
    wanted_languages = {normalize_text(lang) for lang in languages}
    known_languages = {item.language for item in items if item.language}
    unknown_languages = sorted(wanted_languages - known_languages)
    if unknown_languages:
        raise BenchmarkError(
            f"unknown language {', '.join(unknown_languages)}; "
            f"this benchmark has: {', '.join(sorted(known_languages)) or 'no language field'}"
        )
    wanted_ids = set(ids)
    chosen: list[Item] = []
    per_category: dict[str, int] = {}
    for item in items:
        if wanted_categories and item.category not in wanted_categories:
            continue
        if wanted_languages and item.language not in wanted_languages:
            continue
        if wanted_ids and item.id not in wanted_ids:
            continue
        if limit_per_category is not None:
            if per_category.get(item.category, 0) >= limit_per_category:
                continue
            per_category[item.category] = per_category.get(item.category, 0) + 1
        chosen.append(item)
        if limit is not None and len(chosen) >= limit:
            break
    return chosen


_UNSAFE = re.compile(r"[^\w.\-]+")


def item_relpath(item_id: str) -> str:
    """A safe relative file path (without suffix) for an item id.

    ``/`` in an id makes folders (GEdit ids are ``task_type/language/key``, the layout its own
    scripts write); every segment keeps letters of any script, digits, ``._-`` and nothing that
    could climb out of the run folder. When anything had to change, a short hash of the original id
    keeps two different ids from landing on one file.
    """
    segments = []
    for raw in item_id.split("/"):
        segment = _UNSAFE.sub("_", unicodedata.normalize("NFC", raw)).lstrip(".")
        if segment:
            segments.append(segment[:120])
    path = "/".join(segments) or "item"
    if path != item_id:
        path += "-" + hashlib.sha256(item_id.encode()).hexdigest()[:8]
    return path
