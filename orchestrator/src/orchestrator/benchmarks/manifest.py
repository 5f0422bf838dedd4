"""Manifests: JSONL, CSV or YAML lists of items whose images are files next to the manifest.

Fields: ``id``, ``category``, ``instruction``, ``image`` (path relative to the manifest; ``source``
and ``source_image`` are accepted too), optional ``language`` and ``hints`` (per-item guidance
for the judge). Other fields are kept in ``Item.extra``. A YAML manifest is either a list of items
or a mapping with an ``items`` list (and optionally a ``reporting`` declaration: see
benchmarks/reporting.py; a ``reporting.yaml`` beside any manifest works too).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from orchestrator import safe_yaml
from orchestrator.benchmarks.base import (
    OUTSIDE_HINT,
    Benchmark,
    normalize_text,
    resolve_inside,
)
from orchestrator.benchmarks.items import BenchmarkError, Item
from orchestrator.benchmarks.reporting import check_reporting, manifest_reporting

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")
_IMAGE_KEYS = ("image", "source_image", "source")
_KNOWN = {"id", "category", "instruction", "language", "hints", *_IMAGE_KEYS}


class ManifestBenchmark(Benchmark):
    format = "manifest"

    def __init__(
        self,
        path: Path,
        items: list[Item],
        image_paths: dict[str, Path],
        *,
        allow_outside_paths: bool = False,
    ) -> None:
        super().__init__(path, items)
        self._image_paths = image_paths
        self._allow_outside = allow_outside_paths

    def image_path(self, item: Item) -> Path:
        return self._image_paths[item.id]

    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        for item in items:
            try:
                # Again at reading time: a symlink swapped in since loading is caught too.
                path = resolve_inside(
                    self.path.parent, item.source, allow_outside=self._allow_outside
                )
            except ValueError as exc:
                raise BenchmarkError(f"item {item.id!r}: {exc}; {OUTSIDE_HINT}") from None
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise BenchmarkError(f"item {item.id!r}: cannot read image {path}: {exc}") from exc
            yield item, data


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) pairs; ``where`` names the line for error messages."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise BenchmarkError(f"{path}:{number}: not valid JSON ({why})") from None
            if not isinstance(row, dict):
                raise BenchmarkError(f"{path}:{number}: each line must be a JSON object")
            yield f"{path}:{number}", row
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = iter(reader)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:  # a NUL byte, a field over csv's size limit, ...
                raise BenchmarkError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
            where = f"{path}:{reader.line_num}"
            yield where, {k: v for k, v in row.items() if k is not None and v != ""}
    else:
        try:
            data = safe_yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BenchmarkError(f"{path}: not valid YAML ({exc})") from None
        if isinstance(data, dict):
            data = data.get("items")
        if not isinstance(data, list):
            raise BenchmarkError(f"{path}: expected a list of items (or a mapping with 'items')")
        for number, row in enumerate(data, 1):
            if not isinstance(row, dict):
                raise BenchmarkError(f"{path}: item {number} is not a mapping")
            yield f"{path} item {number}", row


def _required(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None or str(value).strip() == "":
        raise BenchmarkError(f"{where}: missing required field {key!r}")
    return str(value)


def load_manifest(path: Path, *, allow_outside_paths: bool = False) -> ManifestBenchmark:
    """Read a manifest; every image path is checked to exist and, unless
    ``allow_outside_paths``, to stay inside the manifest's folder (images are not read).
    Items whose paths lead out are refused together, each named."""
    items: list[Item] = []
    image_paths: dict[str, Path] = {}
    outside: list[str] = []
    for where, row in _rows(path):
        item_id = normalize_text(_required(row, "id", where))
        category = normalize_text(_required(row, "category", where))
        instruction = _required(row, "instruction", where).strip()
        image_key = next((k for k in _IMAGE_KEYS if row.get(k)), None)
        if image_key is None:
            raise BenchmarkError(f"{where}: missing the image path (field 'image')")
        try:
            image = resolve_inside(
                path.parent, str(row[image_key]), allow_outside=allow_outside_paths
            )
        except ValueError as exc:
            outside.append(f"{where}: item {item_id!r}: {exc}")
            continue
        if not image.is_file():
            raise BenchmarkError(f"{where}: image not found: {image}")
        language = row.get("language")
        hints = row.get("hints")
        items.append(
            Item(
                id=item_id,
                category=category,
                instruction=instruction,
                source=str(row[image_key]),
                language=normalize_text(str(language)) if language else None,
                hints=str(hints) if hints else None,
                extra={k: v for k, v in row.items() if k not in _KNOWN},
            )
        )
        image_paths[item_id] = image
    if outside:
        shown = "\n  ".join(outside[:20])
        more = f"\n  ... and {len(outside) - 20} more" if len(outside) > 20 else ""
        raise BenchmarkError(
            f"{len(outside)} item(s) refused: an image path that is not allowed "
            f"({OUTSIDE_HINT}):\n  {shown}{more}"
        )
    if not items:
        raise BenchmarkError(f"{path}: no items")
    benchmark = ManifestBenchmark(path, items, image_paths, allow_outside_paths=allow_outside_paths)
    declared = manifest_reporting(path)
    if declared is not None:
        reporting, where = declared
        check_reporting(reporting, items, where)
        benchmark.reporting = reporting
    return benchmark
