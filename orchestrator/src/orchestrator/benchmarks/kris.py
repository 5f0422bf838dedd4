"""KRIS-Bench as its authors publish it (mercurystraw/Kris_Bench, KRIS_Bench/, commit
800662d11b38d72747f39b11acd904fb8b0141d2; read by its metrics_*.py at 2114fec9afad).

``KRIS_Bench/<task>/annotation.json``: ``{image_id: {"ori_img": "1.jpg" | ["21-1.jpg", ...],
"gt_img": "...", "ins_en": ..., "explain_en": ...}}`` (older files spell ``instruction`` and
``explain``), images beside it. 22 tasks in 7 reasoning dimensions and 3 knowledge types (as
BAGEL's KRIS summarize.py groups them, the statistics the KRIS-Bench tables use). The first
``ori_img`` is the item's source; further ones are its ``input_images``; ``gt_img`` its
``reference_image``; ``explain_en`` is kept as ``explanation`` and is the item's ``hints`` (the
official judge reads it). Item ids are ``<task>/<image_id>``: the authors' scripts read edits from
``results/<model>/<task>/<image_id>.jpg``, so ``--edited-dir results/<model>`` matches.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.benchmarks.base import normalize_text
from orchestrator.benchmarks.folder import (
    INPUT_IMAGES,
    REFERENCE_IMAGE,
    FolderBenchmark,
    check_files,
    read_json,
    text_field,
)
from orchestrator.benchmarks.items import JUDGE_VARIANT, BenchmarkError, Item, Problems
from orchestrator.benchmarks.reporting import KRIS_REPORTING

ANNOTATION = "annotation.json"

# Reasoning dimension -> its tasks (BAGEL eval/gen/kris/summarize.py, kris_benchamrk_type).
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "Attribute Perception": (
        "count_change",
        "color_change",
        "size_adjustment",
        "part_completion",
        "anomaly_correction",
    ),
    "Spatial Perception": ("viewpoint_change", "position_movement"),
    "Temporal Prediction": ("temporal_prediction",),
    "Social Science": ("humanities", "practical_knowledge"),
    "Natural Science": ("biology", "chemistry", "geography", "medicine", "mathematics", "physics"),
    "Logical Reasoning": ("abstract_reasoning", "rule-based_reasoning"),
    "Instruction Decomposition": ("multi-element_composition", "multi-instruction_execution"),
}
# Knowledge type -> its reasoning dimensions (meta_categories there).
KNOWLEDGE_TYPES: dict[str, tuple[str, ...]] = {
    "Factual Knowledge": ("Attribute Perception", "Spatial Perception", "Temporal Prediction"),
    "Conceptual Knowledge": ("Social Science", "Natural Science"),
    "Procedural Knowledge": ("Logical Reasoning", "Instruction Decomposition"),
}
# The published data names the count task object_count in places (metrics_common.py).
_ALIASES = {"object_count": "count_change"}
_TASK_DIMENSION = {task: dim for dim, tasks in DIMENSIONS.items() for task in tasks}
_DIMENSION_TYPE = {dim: kind for kind, dims in KNOWLEDGE_TYPES.items() for dim in dims}


def find_kris_root(path: Path) -> Path | None:
    """The folder whose sub-folders hold annotation.json (``path`` or its KRIS_Bench/)."""
    if not path.is_dir():
        return None
    for candidate in (path, path / "KRIS_Bench"):
        if candidate.is_dir() and any(candidate.glob(f"*/{ANNOTATION}")):
            return candidate
    return None


def task_fields(folder: str, image_id: str, where: str) -> dict[str, Any]:
    """An item's ``task`` (its folder, aliases resolved), reasoning ``dimension``,
    ``knowledge_type`` and ``image_id``; an unknown task is an error naming the 22."""
    task = _ALIASES.get(folder, folder)
    dimension = _TASK_DIMENSION.get(task)
    if dimension is None:
        raise BenchmarkError(
            f"{where}: task {folder!r} is not one of KRIS-Bench's 22 "
            f"({', '.join(sorted(_TASK_DIMENSION))})"
        )
    return {
        "task": task,
        "dimension": dimension,
        "knowledge_type": _DIMENSION_TYPE[dimension],
        "image_id": image_id,
    }


def _images(value: Any, where: str) -> list[str]:
    if isinstance(value, str) and value.strip():
        return [value.strip()]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return [str(v) for v in value]
    raise BenchmarkError(f"{where}: 'ori_img' must be a file name or a list of them")


_FRAME = re.compile(r"(\d+)-(\d+)")


def temporal_variant(inputs: list[str]) -> str | None:
    """A temporal_prediction item's judge variant, ``frame_N`` (N: the frame to predict), when
    its reference frames are the other three of frames 1-4 in order: the kris protocol then
    shows the frames in order with the generated one at N, labelled as
    metrics_temporal_prediction.py (@2114fec9afad) labels them. N is the frame missing from the
    references' ``<id>-<frame>`` names, as that script finds it. None for any other layout (the
    question as written: the references in order, then the prediction)."""
    frames = []
    for name in inputs:
        found = _FRAME.search(Path(name).name)
        if found is None:
            return None
        frames.append(int(found.group(2)))
    missing = sorted({1, 2, 3, 4} - set(frames))
    if len(missing) != 1 or frames != sorted({1, 2, 3, 4} - set(missing)):
        return None
    return f"frame_{missing[0]}"


def load_kris(path: Path, *, allow_outside_paths: bool = False) -> FolderBenchmark:
    root = find_kris_root(path)
    if root is None:
        raise BenchmarkError(f"{path}: no <task>/{ANNOTATION} (KRIS-Bench's layout)")
    items: list[Item] = []
    problems = Problems()
    for annotation in sorted(root.glob(f"*/{ANNOTATION}")):
        folder = annotation.parent.name
        data: Any = None
        with problems.collect():
            task_fields(folder, "", str(annotation))  # an unknown task folder: before reading
            data = read_json(annotation)
            if not isinstance(data, dict):
                raise BenchmarkError(f"{annotation}: expected an object keyed by image id")
        if not isinstance(data, dict):
            continue
        for image_id, row in data.items():
            with problems.collect():
                items.append(_kris_item(folder, image_id, row, f"{annotation}: item {image_id!r}"))
    problems.raise_if_any(root)
    if not items:
        raise BenchmarkError(f"{root}: no items")
    check_files(root, items, allow_outside=allow_outside_paths)
    benchmark = FolderBenchmark(
        root, root, items, name="KRIS-Bench", allow_outside_paths=allow_outside_paths
    )
    benchmark.format = "kris"
    benchmark.reporting = KRIS_REPORTING
    return benchmark


def _kris_item(folder: str, image_id: str, row: Any, where: str) -> Item:
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where}: not an object")
    inputs = [f"{folder}/{name}" for name in _images(row.get("ori_img"), where)]
    extra = task_fields(folder, str(image_id), where)
    task = extra["task"]
    explanation = row.get("explain_en", row.get("explain"))
    if isinstance(explanation, str) and explanation.strip():
        extra["explanation"] = explanation.strip()
    if len(inputs) > 1:
        extra[INPUT_IMAGES] = inputs[1:]
    variant = temporal_variant(inputs) if task == "temporal_prediction" else None
    if variant is not None:
        extra[JUDGE_VARIANT] = variant
    gt = row.get("gt_img")
    if isinstance(gt, str) and gt.strip():
        extra[REFERENCE_IMAGE] = f"{folder}/{gt.strip()}"
    return Item(
        id=f"{task}/{normalize_text(str(image_id))}",
        category=task,
        instruction=text_field(row, ("ins_en", "instruction"), where),
        source=inputs[0],
        # The official judge reads the explanation (knowledge and anomaly tasks):
        # the kris protocols put the item's hints where KRIS-Bench's {explanation} is.
        hints=extra.get("explanation"),
        extra=extra,
    )
