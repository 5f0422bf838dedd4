"""ImgEdit-Bench as its authors publish it (PKU-YuanGroup/ImgEdit, Benchmark/, commit
547185d12c08267a862b94248576e1746e479937).

- Basic: ``basic_edit.json``, ``{key: {"id": "animal/000342021.jpg", "prompt": ..., "edit_type":
  "adjust"}}``; ``id`` is the original image's path under the image root (basic_bench.py joins
  ``origin_img_root`` and ``id``). Nine edit types: add, adjust, extract, replace, remove,
  background, style, compose (hybrid), action.
- UGE (the hard single-turn suite): ``UGE_edit.json``, ``{key: {"id": "000029784.jpg",
  "prompt": ...}}``, no edit type.
Edits are saved as ``<key>.png`` (the item id is the key), so ``--edited-dir`` takes the folder
the authors' scripts read as it is. The image root is the JSON's folder, or the one folder under
it that holds the images (the hub's Benchmark.tar unpacks the JSON beside an image folder).

On the hub (``sysuyy/ImgEdit``): ``Benchmark.tar`` in the snapshot is read as it is, never
unpacked (archive.py): the suite's JSON wherever the tar keeps it, its images under the JSON's
folder; ``--split uge`` picks the UGE suite (default basic).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

from orchestrator.benchmarks.archive import Archive, ArchiveBenchmark, check_members
from orchestrator.benchmarks.base import normalize_text
from orchestrator.benchmarks.folder import FolderBenchmark, check_files, read_json, text_field
from orchestrator.benchmarks.items import BenchmarkError, Item, Problems
from orchestrator.benchmarks.reporting import IMGEDIT_REPORTING, IMGEDIT_UGE_REPORTING

BASIC_FILE = "basic_edit.json"
UGE_FILE = "UGE_edit.json"
SUITES = {BASIC_FILE: "basic", UGE_FILE: "uge"}
_NAMES = {"basic": "ImgEdit-Basic", "uge": "ImgEdit-UGE"}
# On the hub (sysuyy/ImgEdit, the README's "Benchmark.tar # dataset for benchmark").
ARCHIVE = "Benchmark.tar"
UGE_CATEGORY = "uge"


def find_imgedit_index(path: Path) -> Path | None:
    """The suite's JSON: ``path`` itself, or in ``path`` or one or two folders below."""
    if path.is_file():
        return path if path.name in SUITES else None
    for pattern in ("", "*/", "*/*/"):
        for name in (BASIC_FILE, UGE_FILE):
            found = sorted(path.glob(pattern + name))
            if found:
                return found[0]
    return None


def _image_root(index: Path, first_image: str) -> Path:
    folder = index.parent
    if (folder / first_image).is_file():
        return folder
    for candidate in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (candidate / first_image).is_file():
            return candidate
    return folder  # check_files names what is missing


def load_imgedit(path: Path, *, allow_outside_paths: bool = False) -> FolderBenchmark:
    index = find_imgedit_index(path)
    if index is None:
        raise BenchmarkError(f"{path}: no {BASIC_FILE} or {UGE_FILE}")
    suite = SUITES[index.name]
    items = imgedit_items(read_json(index), str(index), suite)
    root = _image_root(index, items[0].source)
    check_files(root, items, allow_outside=allow_outside_paths)
    benchmark = FolderBenchmark(
        index, root, items, name=_NAMES[suite], allow_outside_paths=allow_outside_paths
    )
    return _declare(benchmark, suite)


def _declare(benchmark: FolderBenchmark, suite: str) -> FolderBenchmark:
    benchmark.format = "imgedit"
    benchmark.reporting = IMGEDIT_REPORTING if suite == "basic" else IMGEDIT_UGE_REPORTING
    return benchmark


def imgedit_items(data: Any, index: str, suite: str) -> list[Item]:
    """A suite's JSON as items (the same wherever the JSON and its images are kept)."""
    if not isinstance(data, dict) or not data:
        raise BenchmarkError(f"{index}: expected an object of items keyed by their id")
    items: list[Item] = []
    problems = Problems()
    for key, row in data.items():
        with problems.collect():
            items.append(_imgedit_item(key, row, f"{index}: item {key!r}", suite))
    problems.raise_if_any(index)
    return items


def _imgedit_item(key: str, row: Any, where: str, suite: str) -> Item:
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where}: not an object")
    image = text_field(row, ("id",), where)
    if suite == "basic":
        category = normalize_text(text_field(row, ("edit_type",), where))
    else:
        category = UGE_CATEGORY
    extra: dict[str, Any] = {"key": str(key), "suite": suite, "image": image}
    return Item(
        id=normalize_text(str(key)),
        category=category,
        instruction=text_field(row, ("prompt",), where),
        source=image,
        extra=extra,
    )


def find_imgedit_archive(path: Path) -> Path | None:
    """The hub's Benchmark.tar: ``path`` itself, or in ``path`` (a snapshot of sysuyy/ImgEdit)."""
    if path.is_file():
        return path if path.name == ARCHIVE else None
    candidate = path / ARCHIVE
    return candidate if candidate.is_file() else None


def load_imgedit_archive(path: Path, suite: str | None = None) -> FolderBenchmark:
    """ImgEdit-Bench from the hub's Benchmark.tar, read as it is: the suite's JSON wherever the
    tar keeps it, images under the JSON's folder (beside it or one folder below, as unpacked).
    ``suite`` (``--split``): ``basic`` (default) or ``uge``."""
    found = find_imgedit_archive(path)
    if found is None:
        raise BenchmarkError(f"{path}: no {ARCHIVE}")
    chosen = (suite or "basic").lower()
    name = next((n for n, s in SUITES.items() if s == chosen), None)
    if name is None:
        raise BenchmarkError(f"{found}: ImgEdit suites are basic and uge, not {suite!r}")
    archive = Archive(found)
    members = archive.members(name)
    if not members:
        raise BenchmarkError(f"{found}: holds no {name}")
    where = f"{found}:{members[0]}"
    try:
        data = json.loads(archive.read(members[0]).decode("utf-8-sig"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BenchmarkError(f"{where}: not valid JSON ({type(exc).__name__}: {exc})") from None
    items = imgedit_items(data, where, chosen)
    folder = posixpath.dirname(members[0])
    prefix = archive.find(items[0].source, under=f"{folder}/" if folder else "")
    if prefix is None:
        raise BenchmarkError(f"{where}: the tar holds no {items[0].source!r} under {folder!r}")
    check_members(archive, prefix, items)
    benchmark = ArchiveBenchmark(found, archive, prefix, items, name=_NAMES[chosen])
    return _declare(benchmark, chosen)
