"""KRIS-Bench, ImgEdit and RISEBench as the hub publishes them, built from the authors' layouts
(tests/orchestrator/published_layouts.py) the way the publishers' own code does, and laid in a
Hugging Face cache in huggingface_hub's documented layout (``datasets--owner--name/refs/main``,
``snapshots/<commit>/...``). Written from their code, not from ours:

- lmms-eval's ``kris_bench`` task (EvolvingLMMs-Lab/lmms-eval@75571cfe, lmms_eval/tasks/kris_bench:
  kris_bench.yaml ``dataset_path: wukeming11/kris-bench``, ``test_split: test``; utils.py reads
  ``category``, ``image_id``, ``key``, ``ins_en``, ``explain_en``, ``ori_img``, ``gt_img``,
  ``ori_images`` (a list of images) and ``gt_image`` (an image or none)). The rows are
  prepare_dataset.py's (@8b95ca86: ``key = f"{category}__{image_id}"``, ``ori_img`` always a
  list, ``gt_img``/``explain_en`` "" when absent) with the images embedded as ``datasets``'
  ``Image`` features, written by ``datasets`` itself (``data/test-00000-of-00001.parquet``, as
  ``push_to_hub`` names the shard).
- lmms-eval's ``imgedit`` task (same commit, lmms_eval/tasks/imgedit: imgedit.yaml
  ``dataset_path: kcz358/imgedit``, ``test_split: test``; utils.py reads ``image``, ``prompt``,
  ``key``, ``edit_type``): basic_edit.json's rows keyed as there, the input image embedded.
- RISEBench on the hub (``PhoenixZ/RISEBench``, linked from PhoenixZ810/RISEBench@5f22651's
  README): ``datav2_total_w_subtask.json`` beside ``data.zip`` holding ``data/<image>``; its
  readers download both and unpack the zip so that the JSON's paths are relative to ``data/``
  (BAGEL eval/gen/rise README; gpt_eval.py ``--input data``).
- ImgEdit-Bench's own hub copy (``sysuyy/ImgEdit``, PKU-YuanGroup/ImgEdit@547185d README:
  "Benchmark.tar # dataset for benchmark"; basic_bench_readme.md links it for "the benchmark
  images"): the suites' folders as the authors' Benchmark/ lays them out, in one plain tar. Its
  inner folder names are not documented; the reader finds the JSON and its images by name.
- KRIS-Bench's own hub copy (``Liang0223/KRIS_Bench``, linked from the Kris_Bench README): the
  ``<task>/annotation.json`` folders at the snapshot's root (BAGEL's run_kris.sh downloads the
  snapshot as the KRIS_Bench folder).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def snapshot(cache: Path, repo_id: str) -> Path:
    """An empty snapshot folder of ``repo_id`` in the hub cache at ``cache``."""
    owner, name = repo_id.split("/")
    repo = cache / f"datasets--{owner}--{name}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    folder = repo / "snapshots" / COMMIT
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def as_blobs(folder: Path) -> Path:
    """The snapshot as huggingface_hub really keeps it: each file's content in the repo's
    ``blobs/<hash>``, the snapshot's file a relative symlink to it (file_download.py's
    ``_create_symlink``), so a reader must follow links out of the snapshot into blobs/."""
    import hashlib
    import os

    blobs = folder.parents[1] / "blobs"
    blobs.mkdir(exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        file.unlink()
        file.symlink_to(os.path.relpath(blob, file.parent))
    return folder


def _image(path: Path) -> dict[str, Any]:
    return {"bytes": path.read_bytes(), "path": path.name}


def kris_lmms_rows(kris_root: Path) -> list[dict[str, Any]]:
    """prepare_dataset.py's rows for a KRIS_Bench folder, with the images embedded."""
    rows = []
    for annotation in sorted(kris_root.glob("*/annotation.json")):
        category = annotation.parent.name
        data = json.loads(annotation.read_text(encoding="utf-8"))
        for image_id, entry in data.items():
            ori = entry.get("ori_img", [])
            if isinstance(ori, str):
                ori = [ori]
            gt = entry.get("gt_img", "") or ""
            rows.append(
                {
                    "key": f"{category}__{image_id}",
                    "category": category,
                    "image_id": str(image_id),
                    "ori_img": ori,
                    "gt_img": gt,
                    "ins_en": entry.get("ins_en", "") or "",
                    "explain_en": entry.get("explain_en", "") or "",
                    "ori_images": [_image(annotation.parent / n) for n in ori],
                    "gt_image": _image(annotation.parent / gt) if gt else None,
                }
            )
    return rows


def write_kris_lmms(cache: Path, kris_root: Path, repo_id: str = "wukeming11/kris-bench") -> Path:
    import datasets

    features = datasets.Features(
        {
            "key": datasets.Value("string"),
            "category": datasets.Value("string"),
            "image_id": datasets.Value("string"),
            "ori_img": datasets.Sequence(datasets.Value("string")),
            "gt_img": datasets.Value("string"),
            "ins_en": datasets.Value("string"),
            "explain_en": datasets.Value("string"),
            "ori_images": datasets.Sequence(datasets.Image()),
            "gt_image": datasets.Image(),
        }
    )
    folder = snapshot(cache, repo_id)
    table = datasets.Dataset.from_list(kris_lmms_rows(kris_root), features=features)
    (folder / "data").mkdir(exist_ok=True)
    table.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def write_imgedit_lmms(cache: Path, basic: Path, repo_id: str = "kcz358/imgedit") -> Path:
    """``basic`` is the authors' Basic/ folder (basic_edit.json beside its image root)."""
    import datasets

    data = json.loads((basic / "basic_edit.json").read_text(encoding="utf-8"))
    images = basic / "singleturn"
    rows = [
        {
            "key": key,
            "prompt": row["prompt"],
            "edit_type": row["edit_type"],
            "image": _image(images / row["id"]),
        }
        for key, row in data.items()
    ]
    features = datasets.Features(
        {
            "key": datasets.Value("string"),
            "prompt": datasets.Value("string"),
            "edit_type": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    folder = snapshot(cache, repo_id)
    (folder / "data").mkdir(exist_ok=True)
    table = datasets.Dataset.from_list(rows, features=features)
    table.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def write_rise_hub(cache: Path, authors: Path, repo_id: str = "PhoenixZ/RISEBench") -> Path:
    """``authors`` holds the repository's data/ (data_total.json and its image folders)."""
    data = authors / "data"
    folder = snapshot(cache, repo_id)
    shutil.copy(data / "data_total.json", folder / "datav2_total_w_subtask.json")
    with zipfile.ZipFile(folder / "data.zip", "w") as archive:
        for image in sorted(p for p in data.rglob("*") if p.is_file() and p.suffix == ".png"):
            archive.write(image, f"data/{image.relative_to(data).as_posix()}")
    return folder


def write_kris_hub(cache: Path, kris_root: Path, repo_id: str = "Liang0223/KRIS_Bench") -> Path:
    folder = snapshot(cache, repo_id)
    shutil.copytree(kris_root, folder, dirs_exist_ok=True)
    return folder


def write_imgedit_hub(cache: Path, parent: Path, repo_id: str = "sysuyy/ImgEdit") -> Path:
    """``parent`` holds the authors' Basic/ and UGE/ folders (published_layouts.write_imgedit)."""
    folder = snapshot(cache, repo_id)
    with tarfile.open(folder / "Benchmark.tar", "w") as archive:
        for suite in ("Basic", "UGE"):
            archive.add(parent / suite, arcname=f"Benchmark/{suite}")
    return folder
