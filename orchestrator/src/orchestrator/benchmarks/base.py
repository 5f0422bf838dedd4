"""What every benchmark format gives the runner: items (metadata only) and a stream of images.

Items are small and all kept in memory (10,000 items are a few MB); images are read only as they
are needed, in benchmark order, by `Benchmark.iter_images`, so memory stays flat as a benchmark
grows.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from orchestrator.benchmarks.items import BenchmarkError, Item, Problems
from orchestrator.benchmarks.reporting import Reporting
from shared_schemas.images import sniff_format


def normalize_text(value: str) -> str:
    """NFC, so a category typed on the command line matches the one in the file (物理 == 物理)."""
    return unicodedata.normalize("NFC", value.strip())


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
        self.reporting: Reporting = Reporting()

    @property
    def categories(self) -> list[str]:
        return sorted({item.category for item in self.items})

    @abstractmethod
    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        """Yield ``(item, encoded image bytes)`` for the given items, one at a time."""

    def input_count(self, item: Item) -> int:  # noqa: ARG002 (a default)
        """How many input images the item has, its first included (without reading them)."""
        return 1

    def input_images(self, item: Item) -> list[bytes]:  # noqa: ARG002 (a default)
        """The item's further input images after its first, in order (none here: a benchmark
        whose items have several inputs says so)."""
        return []

    def reference_image(self, item: Item) -> bytes | None:  # noqa: ARG002 (a default)
        """The item's reference (ground-truth) image, where the benchmark has one."""
        return None

    def fingerprint(self) -> str:
        """sha256 of the benchmark's metadata (ids, categories, instructions): for provenance."""
        digest = hashlib.sha256()
        for item in self.items:
            for part in (item.id, item.category, item.instruction, item.language or ""):
                digest.update(part.encode())
                digest.update(b"\0")
        return digest.hexdigest()


def _check_unique_ids(items: Sequence[Item], path: Path) -> None:
    """Every id once, and every id's file name its own (item_relpath makes them distinct by
    construction; this is the guard that says so, naming both ids, if that ever breaks).
    Every repeated id is named, in one error."""
    problems = Problems()
    counts: dict[str, int] = {}
    names: dict[str, str] = {}
    for item in items:
        counts[item.id] = counts.get(item.id, 0) + 1
        if counts[item.id] > 1:
            continue
        name = item_relpath(item.id)
        if name in names:
            problems.add(
                f"{path}: items {names[name]!r} and {item.id!r} would share the file name "
                f"{name!r}; rename one of them"
            )
        names[name] = item.id
    for item_id, count in counts.items():
        if count > 1:
            problems.add(f"{path}: item id {item_id!r} appears more than once ({count} times)")
    problems.raise_if_any(path, "every item needs an id of its own")


OUTSIDE_HINT = "use --allow-outside-paths to allow images outside the benchmark's folder"


def resolve_inside(root: Path, raw: str | Path, *, allow_outside: bool = False) -> Path:
    """``raw`` (relative to ``root``) as a resolved path that stays inside ``root``.

    Absolute paths, and relative ones that lead out of ``root`` through ``..`` or a symlink, are
    a ValueError saying which, unless ``allow_outside``: a benchmark must not make editbench read
    (and send to a service) files from elsewhere on the machine.
    """
    if "\x00" in str(raw):
        raise ValueError(f"image path {str(raw)!r} contains a NUL byte")
    base = root.resolve()
    candidate = Path(raw)
    if candidate.is_absolute():
        if not allow_outside:
            raise ValueError(f"image path {str(raw)!r} is absolute")
        return candidate.resolve()
    resolved = (base / candidate).resolve()
    if not allow_outside and not resolved.is_relative_to(base):
        if _hub_blob(base, candidate, resolved):
            return resolved
        how = "through '..'" if ".." in candidate.parts else "through a symlink"
        raise ValueError(f"image path {str(raw)!r} leads outside {base} ({how})")
    return resolved


def image_problem(image: Path, *, formats: bool = True) -> str | None:
    """Why ``image`` cannot be sent (missing, unreadable, empty, and with ``formats`` not
    PNG/JPEG/WebP), or None. Only its first bytes are read."""
    if not image.is_file():
        return f"image not found: {image}"
    try:
        with image.open("rb") as file:
            head = file.read(16)
    except OSError as exc:
        return f"cannot read image {image}: {exc.strerror or exc}"
    return head_problem(head, str(image), formats=formats)


def head_problem(head: bytes, where: str, *, formats: bool = True) -> str | None:
    """Why an image whose first bytes are ``head`` cannot be sent (empty, or with ``formats``
    not PNG, JPEG or WebP, the formats the services take), or None.

    A user's manifest is checked for formats (its author can convert the file); a published
    benchmark is not: one odd file there (which the services refuse, failing that item) must not
    make the whole benchmark unloadable. An empty file is a damaged download either way."""
    if not head:
        return f"image is empty (0 bytes): {where}"
    if formats and sniff_format(head) is None:
        return f"not a PNG, JPEG or WebP image: {where}"
    return None


_HUB_REPO_KINDS = ("datasets--", "models--", "spaces--")


def _hub_blob(base: Path, candidate: Path, resolved: Path) -> bool:
    """Whether ``candidate`` is a file of a Hugging Face cache snapshot (``base`` is in
    ``<repo>/snapshots/<commit>/``) linked, as huggingface_hub links every file, to that repo's
    ``blobs/``: reading it does not leave the benchmark (no '..', and nowhere but the blobs)."""
    if not os.path.normpath(base / candidate).startswith(str(base) + os.sep):
        return False
    for folder in (base, *base.parents):
        snapshots = folder.parent
        if snapshots.name == "snapshots" and snapshots.parent.name.startswith(_HUB_REPO_KINDS):
            return resolved.is_relative_to((snapshots.parent / "blobs").resolve())
    return False


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


_UNSAFE_FILE = re.compile(r"[^\w.\-]+")
_UNSAFE_FOLDER = re.compile(r"[^\w\-]+")
_SEGMENT_BYTES = 100  # + "~" + 16 hex + a suffix stays far below the 255-byte name limit
_HASH_MARK = "~"  # never in a kept name: \w, ".", "-" are all a name keeps
_MAX_SEGMENTS = 8  # folders deep, at most
_PATH_BYTES = 400  # a name, folders included, at most (+ the hash); far below PATH_MAX


def _segment(raw: str, unsafe: re.Pattern[str]) -> str:
    segment = unsafe.sub("_", unicodedata.normalize("NFC", raw)).lstrip(".")
    return segment.encode("utf-8")[:_SEGMENT_BYTES].decode("utf-8", "ignore")


def item_relpath(item_id: str) -> str:
    """A safe relative file path (without suffix) for an item id; two ids never get one path.

    ``/`` in an id makes folders (GEdit ids are ``task_type/language/key``, the layout its own
    scripts write). A folder keeps letters of any script, digits, ``_`` and ``-``; the last
    segment also ``.``; nothing can climb out of the run folder; more than 8 folders or 400
    bytes make one flat name. When anything had to change, or the name is not the same
    case-folded (macOS and Windows file systems ignore case), ``~`` and 16 hex digits of the id's
    sha256 are appended. That makes the names collision-free by construction, case ignored or
    not: a kept name never contains ``~`` and is its own case-folding, so a changed id never
    lands on a kept one; two changed ids differ in their hash; and as folders have no ``.``
    while files always end in a suffix, no folder is ever named like a file.
    """
    raw_segments = item_id.split("/")
    segments = []
    for index, raw in enumerate(raw_segments):
        last = index == len(raw_segments) - 1
        segment = _segment(raw, _UNSAFE_FILE if last else _UNSAFE_FOLDER)
        if segment:
            segments.append(segment)
    if len(segments) > _MAX_SEGMENTS or len("/".join(segments).encode()) > _PATH_BYTES:
        # An absurd id (thousands of segments): one flat name, whatever the id's shape.
        segments = [_segment("_".join(segments), _UNSAFE_FILE)]
    path = "/".join(segments) or "item"
    # Case-insensitive file systems (macOS, Windows): a name with capitals gets the hash too,
    # so two ids that differ only in case never name one file.
    if path != item_id or path != path.casefold():
        path += _HASH_MARK + hashlib.sha256(item_id.encode()).hexdigest()[:16]
    return path


_LEGACY_UNSAFE = re.compile(r"[^\w.\-]+")


def legacy_item_relpath(item_id: str) -> str:
    """The name editbench gave an item before names were collision-free (run folders and
    edited-image folders made then): still looked for, never written."""
    segments = []
    for raw in item_id.split("/"):
        segment = _LEGACY_UNSAFE.sub("_", unicodedata.normalize("NFC", raw)).lstrip(".")
        if segment:
            segments.append(segment[:120])
    path = "/".join(segments) or "item"
    if path != item_id:
        path += "-" + hashlib.sha256(item_id.encode()).hexdigest()[:8]
    return path
