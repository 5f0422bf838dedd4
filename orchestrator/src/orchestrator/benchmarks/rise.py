"""RISEBench as its authors publish it (PhoenixZ810/RISEBench, data/, commit
5f226519b25c005bb32fb83864bbd1845ab85c23; read by its gpt_eval.py).

``data_total.json`` (RISEBench-64 in the repository; the 360-item release on the hub has the
same fields): a list of ``{"index", "category", "instruction", "image", ...}`` with images
relative to the JSON's folder, and per item one reference: ``reference`` (text),
``reference_txt`` (text, logical puzzles) or ``reference_img`` (an image); optional ``subtask``,
``reasoning_img``, ``consistency_free``, ``reasoning_wo_ins``, all kept; a text reference is also
the item's ``hints`` (the official judge reads it). Four categories:
temporal_reasoning, causal_reasoning, spatial_reasoning, logical_reasoning. Item ids are
``<category>/<index>``: gpt_eval.py reads edits from ``outputs/<model>/images/<category>/
<index>.png``, so ``--edited-dir outputs/<model>/images`` matches.

On the hub (``PhoenixZ/RISEBench``, the README's "HF-RISEBench" link): the 360-item
``datav2_total_w_subtask.json`` beside ``data.zip`` (``data/<category>_images/...``): read from
the archive as it is (archive.py), or from ``data/`` when it was unpacked beside the JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.benchmarks.archive import Archive, ArchiveBenchmark, check_members
from orchestrator.benchmarks.base import normalize_text
from orchestrator.benchmarks.folder import (
    REFERENCE_IMAGE,
    FolderBenchmark,
    check_files,
    read_json,
    text_field,
)
from orchestrator.benchmarks.items import (
    JUDGE_VARIANT,
    SCORED_AS_FREE,
    BenchmarkError,
    Item,
    Problems,
)
from orchestrator.benchmarks.reporting import RISE_REPORTING

# The repository's RISEBench-64, and the 360-item release on the hub (PhoenixZ/RISEBench).
INDEX_FILES = ("data_total.json", "data.json", "datav2_total_w_subtask.json")
# The hub keeps the images in data.zip beside the JSON (members data/<category>_images/...).
HUB_ARCHIVE = "data.zip"
CATEGORIES = ("temporal_reasoning", "causal_reasoning", "spatial_reasoning", "logical_reasoning")
# Kept as they are (the judge's prompt choice and the statistics read them).
_KEPT = ("subtask", "reasoning_img", "consistency_free", "reasoning_wo_ins", "reference")


def find_rise_index(path: Path) -> Path | None:
    if path.is_file():
        return path if path.name in INDEX_FILES else None
    for pattern in ("", "data/"):
        for name in INDEX_FILES:
            candidate = path / f"{pattern}{name}"
            if candidate.is_file():
                return candidate
    return None


FREE = "consistency_free"
# gpt_eval.py's calculate_score (@5f22651) tests ``'consistency_free' in row and
# row['consistency_free']`` on a row of pd.DataFrame(data): once any row has a value, every other
# row holds NaN there, and NaN is true. So where the data has the column, a temporal, causal or
# spatial item without a value is SCORED 0.2 P + 0.8 R like a consistency-free one, though its
# consistency is judged and its completion needs it (calculate_completion tests pd.isna).


def _present(value: Any) -> bool:
    """pandas' notna on a JSON value: absent, null and NaN are missing."""
    return value is not None and value == value and value != ""


def load_rise(path: Path, *, allow_outside_paths: bool = False) -> FolderBenchmark:
    index = find_rise_index(path)
    if index is None:
        raise BenchmarkError(f"{path}: no {' or '.join(INDEX_FILES)}")
    items = rise_items(read_json(index), index)
    name = "RISEBench"
    root = _image_root(index, items[0].source)
    benchmark: FolderBenchmark
    if root is None:
        archive = Archive(index.parent / HUB_ARCHIVE)
        prefix = archive.find(items[0].source)
        if prefix is None:
            first = items[0].source
            raise BenchmarkError(f"{archive.path}: holds no {first!r} (the first item's image)")
        check_members(archive, prefix, items)
        benchmark = ArchiveBenchmark(index, archive, prefix, items, name=name)
    else:
        check_files(root, items, allow_outside=allow_outside_paths)
        benchmark = FolderBenchmark(
            index, root, items, name=name, allow_outside_paths=allow_outside_paths
        )
    benchmark.format = "rise"
    benchmark.reporting = RISE_REPORTING
    return benchmark


def _image_root(index: Path, first_image: str) -> Path | None:
    """The folder the JSON's image paths are relative to: its own folder, or ``data/`` beside
    it (the hub's data.zip unpacked there); None when only the hub's data.zip has them."""
    for candidate in (index.parent, index.parent / "data"):
        if (candidate / first_image).is_file():
            return candidate
    if (index.parent / HUB_ARCHIVE).is_file():
        return None
    return index.parent  # check_files names what is missing


def judge_variant(
    category: str, extra: dict[str, Any], *, without_instruction: bool = False
) -> str | None:
    """Which of the rise protocol's question variants the item is asked, as gpt_eval.py's
    eval_vanilla (@5f22651) branches: spatial and logical items with a reference image are judged
    against it in place of their input (``reference_image``; a logical one
    ``reference_image_wo_ins`` when the data has a reasoning_wo_ins column: eval_vanilla tests
    ``'reasoning_wo_ins' in item`` on a pandas row, true for every row once any has the key);
    temporal, causal and spatial items with ``reasoning_img`` are shown their input for the
    reasoning check (``input``; spatial: ``spatial_input``, its own prompt). None: the
    questions as written."""
    with_image = extra.get("reference_kind") == "image"
    if with_image and category == "logical_reasoning" and without_instruction:
        return "reference_image_wo_ins"
    if with_image and category in ("spatial_reasoning", "logical_reasoning"):
        return "reference_image"
    if category != "logical_reasoning" and "reasoning_img" in extra:
        return "spatial_input" if category == "spatial_reasoning" else "input"
    return None


def rise_items(data: Any, index: Path) -> list[Item]:
    """RISEBench's rows as items (the same whichever way its images are stored)."""
    if not isinstance(data, list) or not data:
        raise BenchmarkError(f"{index}: expected a list of items")
    items: list[Item] = []
    # A column of the authors' DataFrame: present for every row once any row has the key.
    without_instruction = any(isinstance(row, dict) and "reasoning_wo_ins" in row for row in data)
    free_column = any(isinstance(row, dict) and _present(row.get(FREE)) for row in data)
    problems = Problems()
    for number, row in enumerate(data, 1):
        with problems.collect():
            items.append(
                _rise_item(row, f"{index}: item {number}", without_instruction, free_column)
            )
    problems.raise_if_any(index)
    return items


def _rise_item(row: Any, where: str, without_instruction: bool, free_column: bool) -> Item:
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where}: not an object")
    category = normalize_text(text_field(row, ("category",), where))
    if category not in CATEGORIES:
        raise BenchmarkError(f"{where}: category {category!r} is not one of {CATEGORIES}")
    index = row.get("index")
    # A string or a whole number; never the text of a null or a list ("None", "[1]").
    valid = isinstance(index, str | int) and not isinstance(index, bool)
    name = normalize_text(str(index)) if valid else ""
    if not name:
        raise BenchmarkError(f"{where}: missing 'index' (a text or a number)")
    extra: dict[str, Any] = {"index": name}
    for key in _KEPT:
        if _present(row.get(key)):
            extra[key] = row[key]
    if _present(row.get("reference_txt")):
        extra["reference"] = str(row["reference_txt"])
        extra["reference_kind"] = "text"
    elif _present(row.get("reference_img")):
        extra[REFERENCE_IMAGE] = str(row["reference_img"])
        extra["reference_kind"] = "image"
    elif "reference" in extra:
        extra["reference_kind"] = "text"
    if free_column and FREE not in extra and category != "logical_reasoning":
        extra[SCORED_AS_FREE] = True
    variant = judge_variant(category, extra, without_instruction=without_instruction)
    if variant is not None:
        extra[JUDGE_VARIANT] = variant
    reference = extra.get("reference") if extra.get("reference_kind") == "text" else None
    return Item(
        id=f"{category}/{name}",
        category=category,
        instruction=text_field(row, ("instruction",), where),
        source=text_field(row, ("image",), where),
        # The official judge reads the text reference: the rise protocols put the
        # item's hints where RISEBench's {reference} is.
        hints=str(reference) if reference else None,
        extra=extra,
    )
