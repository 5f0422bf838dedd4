"""Manifests: JSONL, CSV or YAML lists of items whose images are files next to the manifest.

Fields: ``id``, ``category``, ``instruction``, ``image`` (path relative to the manifest; ``source``
and ``source_image`` are accepted too), optional ``language`` and ``hints`` (per-item guidance
for the judge). Other fields are kept in ``Item.extra``. A YAML manifest is either a list of items
or a mapping with an ``items`` list (and optionally a ``reporting`` declaration: see
benchmarks/reporting.py; a ``reporting.yaml`` beside any manifest works too).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from orchestrator import safe_yaml
from orchestrator.benchmarks.base import (
    OUTSIDE_HINT,
    Benchmark,
    image_problem,
    normalize_text,
    resolve_inside,
)
from orchestrator.benchmarks.items import BenchmarkError, Item, Problems
from orchestrator.benchmarks.reporting import check_reporting, manifest_reporting

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")
_IMAGE_KEYS = ("image", "source_image", "source")
_KNOWN = {"id", "category", "instruction", "language", "hints", *_IMAGE_KEYS}
_FIELDS_HINT = 'with "id", "category", "instruction" and "image"'


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


def _read_text(path: Path) -> str:
    """The manifest's text; every line that is not UTF-8 is named (a BOM is allowed)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    problems = Problems()
    for number, line in enumerate(raw.split(b"\n"), 1):
        try:
            line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            problems.add(f"{path}:{number}: not UTF-8 text (byte {exc.start + 1} of the line)")
    problems.raise_if_any(path, "save the file as UTF-8")
    raise AssertionError("unreachable: the whole file decoded as UTF-8 line by line")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {', '.join(map(repr, repeated))} given more than once")
    return dict(pairs)


def _rows(path: Path, problems: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) pairs; ``where`` names the line for error messages. A line that is no
    item goes to ``problems`` and the rest are read on."""
    suffix = path.suffix.lower()
    text = _read_text(path)
    if suffix == ".jsonl":
        # Lines end at \n only: str.splitlines() would also cut at U+2028, U+0085 and other
        # characters JSON allows unescaped inside a string.
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line, object_pairs_hook=_unique_keys)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                why = (
                    exc.msg
                    if isinstance(exc, json.JSONDecodeError)
                    else "nested too deeply"
                    if isinstance(exc, RecursionError)
                    else str(exc)
                )
                problems.add(f"{path}:{number}: not valid JSON ({why})")
                continue
            if not isinstance(row, dict):
                problems.add(f"{path}:{number}: each line must be a JSON object ({_FIELDS_HINT})")
                continue
            yield f"{path}:{number}", row
    elif suffix == ".csv":
        # newline="": quoted fields keep their line breaks (csv's documented way to read).
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, [])
        except csv.Error as exc:
            raise BenchmarkError(f"{path}:1: not valid CSV ({exc})") from None
        _check_header(path, header)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a NUL byte, a field over csv's size limit, ...
                problems.add(f"{path}:{reader.line_num}: not valid CSV ({exc})")
                return  # csv cannot find the next row after this one
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
                problems.add(
                    f"{where}: {len(cells)} cells, but the header names {len(header)} columns "
                    "(quote a cell that holds a comma)"
                )
                continue
            yield where, {k: v for k, v in zip(header, cells, strict=False) if k and v != ""}
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
                problems.add(f"{path} item {number}: not a mapping ({_FIELDS_HINT})")
                continue
            yield f"{path} item {number}", row


def _check_header(path: Path, header: list[str]) -> None:
    """The CSV header names each column once and has the required ones."""
    names = [name.strip() for name in header]
    # Blank names (a spreadsheet's trailing empty columns) name nothing: never a repeat.
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    missing = [key for key in ("id", "category", "instruction") if key not in names]
    if not any(key in names for key in _IMAGE_KEYS):
        missing.append("image")
    if repeated or missing:
        said = []
        if missing:
            said.append(f"lacks column(s) {', '.join(missing)}")
        if repeated:
            said.append(f"names column(s) {', '.join(repeated)} more than once")
        raise BenchmarkError(
            f"{path}:1: the header {'; '.join(said)} (it has: {', '.join(names) or 'nothing'}); "
            "the first line must name the columns id, category, instruction, image (lower case, "
            "separated by commas)"
        )
    header[:] = names


def _text(row: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    """A field as text: a string, or a whole number (an id or category written as ``7``)."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BenchmarkError(f"{where}: missing required field {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        kind = "true/false" if isinstance(value, bool) else type(value).__name__
        raise BenchmarkError(
            f"{where}: field {key!r} must be text, not {kind} ({_shown(value)}); quote it"
        )
    return str(value)


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _required(row: dict[str, Any], key: str, where: str) -> str:
    value = _text(row, key, where)
    assert value is not None
    return value


def load_manifest(path: Path, *, allow_outside_paths: bool = False) -> ManifestBenchmark:
    """Read a manifest; every image path is checked to exist, to be a PNG, JPEG or WebP file
    (by its first bytes) and, unless ``allow_outside_paths``, to stay inside the manifest's
    folder. Every bad line is named in one error, before anything is sent anywhere."""
    items: list[Item] = []
    image_paths: dict[str, Path] = {}
    problems = Problems()
    outside = False
    for where, row in _rows(path, problems):
        with problems.collect():
            item_id = normalize_text(_required(row, "id", where))
            category = normalize_text(_required(row, "category", where))
            instruction = _instruction(row, where)
            language = _text(row, "language", where, required=False)
            hints = _text(row, "hints", where, required=False)
            # The first of image / source_image / source that is given (not null, not blank).
            image_key = next((k for k in _IMAGE_KEYS if _given(row.get(k))), None)
            if image_key is None:
                raise BenchmarkError(f"{where}: missing the image path (field 'image')")
            raw_image = _required(row, image_key, where)
            try:
                image = resolve_inside(path.parent, raw_image, allow_outside=allow_outside_paths)
            except ValueError as exc:
                outside = True
                raise BenchmarkError(f"{where}: item {item_id!r}: {exc}") from None
            problem = image_problem(image)
            if problem is not None:
                raise BenchmarkError(f"{where}: item {item_id!r}: {problem}")
            items.append(
                Item(
                    id=item_id,
                    category=category,
                    instruction=instruction,
                    source=raw_image,
                    language=normalize_text(language) if language else None,
                    hints=hints,
                    extra={k: v for k, v in row.items() if k not in _KNOWN},
                )
            )
            image_paths[item_id] = image
    problems.raise_if_any(path, OUTSIDE_HINT if outside else "")
    if not items:
        raise BenchmarkError(f"{path}: no items")
    benchmark = ManifestBenchmark(path, items, image_paths, allow_outside_paths=allow_outside_paths)
    declared = manifest_reporting(path)
    if declared is not None:
        reporting, where = declared
        check_reporting(reporting, items, where)
        benchmark.reporting = reporting
    return benchmark


def _instruction(row: dict[str, Any], where: str) -> str:
    value = row.get("instruction")
    if value is not None and not isinstance(value, str):
        raise BenchmarkError(
            f"{where}: field 'instruction' must be text, not {type(value).__name__} "
            f"({_shown(value)})"
        )
    return _required(row, "instruction", where).strip()
