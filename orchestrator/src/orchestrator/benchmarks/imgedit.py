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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.benchmarks.base import normalize_text
from orchestrator.benchmarks.folder import FolderBenchmark, check_files, read_json, text_field
from orchestrator.benchmarks.items import BenchmarkError, Item
from orchestrator.benchmarks.reporting import IMGEDIT_REPORTING, IMGEDIT_UGE_REPORTING

BASIC_FILE = "basic_edit.json"
UGE_FILE = "UGE_edit.json"
SUITES = {BASIC_FILE: "basic", UGE_FILE: "uge"}
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
    data = read_json(index)
    if not isinstance(data, dict) or not data:
        raise BenchmarkError(f"{index}: expected an object of items keyed by their id")
    items: list[Item] = []
    for key, row in data.items():
        where = f"{index}: item {key!r}"
        if not isinstance(row, dict):
            raise BenchmarkError(f"{where}: not an object")
        image = text_field(row, ("id",), where)
        if suite == "basic":
            category = normalize_text(text_field(row, ("edit_type",), where))
        else:
            category = UGE_CATEGORY
        extra: dict[str, Any] = {"key": str(key), "suite": suite, "image": image}
        items.append(
            Item(
                id=normalize_text(str(key)),
                category=category,
                instruction=text_field(row, ("prompt",), where),
                source=image,
                extra=extra,
            )
        )
    root = _image_root(index, items[0].source)
    check_files(root, items, allow_outside=allow_outside_paths)
    benchmark = FolderBenchmark(
        index,
        root,
        items,
        name=f"ImgEdit-{'Basic' if suite == 'basic' else 'UGE'}",
        allow_outside_paths=allow_outside_paths,
    )
    benchmark.format = "imgedit"
    benchmark.reporting = IMGEDIT_REPORTING if suite == "basic" else IMGEDIT_UGE_REPORTING
    return benchmark
