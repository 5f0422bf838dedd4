"""Small KRIS-Bench, ImgEdit and RISEBench folders in their authors' published layouts.

Written from the authors' own readers, not from ours:
- KRIS-Bench (mercurystraw/Kris_Bench, metrics_common.py / metrics_multi_element.py @2114fec):
  ``KRIS_Bench/<category>/annotation.json`` keyed by image id, ``ori_img`` a file name or (multi
  element, temporal) a list, ``gt_img`` (viewpoint), ``ins_en``, ``explain_en``, images beside.
- ImgEdit (PKU-YuanGroup/ImgEdit@547185d, Benchmark/Basic/basic_bench.py): ``basic_edit.json``
  ``{key: {id, prompt, edit_type}}``, ``origin_img_root/<id>``; UGE: ``UGE_edit.json``
  ``{key: {id, prompt}}``.
- RISEBench (PhoenixZ810/RISEBench@5f22651, gpt_eval.py): ``data/data_total.json``, a list of
  ``{index, category, instruction, image, reference | reference_txt | reference_img}``, images
  relative to ``data/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.images import image_bytes

# (category, image id, ori_img, gt_img, has explanation)
KRIS_ROWS: list[tuple[str, str, Any, str | None]] = [
    ("color_change", "1", "1.jpg", None),
    ("color_change", "2", "2.png", None),
    ("count_change", "1", "1.jpg", None),
    ("viewpoint_change", "3", "3.jpg", "3-gt.jpg"),
    ("temporal_prediction", "4", ["4-1.jpg", "4-2.jpg", "4-3.jpg"], "4-4.jpg"),
    ("humanities", "1", "1.jpg", None),
    ("chemistry", "7", "7.jpg", None),
    ("abstract_reasoning", "5", "5.jpeg", None),
    ("multi-element_composition", "21", ["21-1.jpg", "21-2.jpg", "21-3.jpg"], None),
    ("multi-instruction_execution", "2", "2.jpg", None),
]


def write_kris(parent: Path) -> Path:
    root = parent / "KRIS_Bench"
    annotations: dict[str, dict[str, Any]] = {}
    for seed, (category, image_id, ori, gt) in enumerate(KRIS_ROWS):
        folder = root / category
        folder.mkdir(parents=True, exist_ok=True)
        for n, name in enumerate([ori] if isinstance(ori, str) else ori):
            # each input its own picture, so a reader that mixes them up is seen
            (folder / name).write_bytes(image_bytes(24, 24, seed=seed + 1000 * n))
        entry: dict[str, Any] = {
            "ori_img": ori,
            "ins_en": f"{category} instruction {image_id}",
            "explain_en": f"why {category} {image_id}",
        }
        if gt:
            (folder / gt).write_bytes(image_bytes(24, 24, seed=100 + seed))
            entry["gt_img"] = gt
        annotations.setdefault(category, {})[image_id] = entry
    for category, entries in annotations.items():
        text = json.dumps(entries, indent=2, ensure_ascii=False)
        (root / category / "annotation.json").write_text(text, encoding="utf-8")
    return root


IMGEDIT_BASIC = {
    "1082": {"id": "animal/000342021.jpg", "prompt": "Change the shell.", "edit_type": "adjust"},
    "1068": {"id": "animal/000047206.jpg", "prompt": "Darker fur.", "edit_type": "adjust"},
    "673": {"id": "style/000278574.jpg", "prompt": "Make it ukiyo-e.", "edit_type": "style"},
    "97": {"id": "for_add/000236569.jpg", "prompt": "Add a chandelier.", "edit_type": "add"},
    "510": {
        "id": "transport/000351716.jpg",
        "prompt": "Remove the trolley.",
        "edit_type": "remove",
    },
    "450": {"id": "clothes/00000051.jpg", "prompt": "Extract the top.", "edit_type": "extract"},
}
IMGEDIT_UGE = {
    "1": {"id": "000029784.jpg", "prompt": "Remove the lemon slice."},
    "2": {"id": "000065904.jpg", "prompt": "Remove the passenger."},
    "3": {"id": "000066341.jpg", "prompt": "Remove the small tomato."},
}


def write_imgedit(parent: Path, suite: str = "basic") -> Path:
    """The JSON and, beside it, the image root folder (as Benchmark.tar unpacks)."""
    folder = parent / ("Basic" if suite == "basic" else "UGE")
    images = folder / ("singleturn" if suite == "basic" else "images")
    data = IMGEDIT_BASIC if suite == "basic" else IMGEDIT_UGE
    for seed, row in enumerate(data.values()):
        path = images / row["id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(24, 24, seed=seed))
    name = "basic_edit.json" if suite == "basic" else "UGE_edit.json"
    (folder / name).write_text(json.dumps(data, indent=4), encoding="utf-8")
    return folder


RISE_ROWS: list[dict[str, Any]] = [
    {"index": "temporal_reasoning_1", "category": "temporal_reasoning", "reference": "Rotten."},
    {"index": "temporal_reasoning_2", "category": "temporal_reasoning", "reference": "A tree."},
    {"index": "causal_reasoning_1", "category": "causal_reasoning", "reference": "Melted."},
    {"index": "causal_reasoning_2", "category": "causal_reasoning", "reference": "Broken.",
     "consistency_free": True},
    {"index": "spatial_reasoning_1", "category": "spatial_reasoning", "reference": "Stacked."},
    {"index": "spatial_reasoning_2", "category": "spatial_reasoning",
     "reference_img": "spatial_reasoning_images/2_ref.png"},
    {"index": "logical_reasoning_1", "category": "logical_reasoning",
     "reference_img": "logical_reasoning_images/1_ref.png"},
    {"index": "logical_reasoning_2", "category": "logical_reasoning",
     "reference_txt": "The path goes 1-2-4."},
]  # fmt: skip


def write_rise(parent: Path) -> Path:
    data = parent / "data"
    rows = []
    for seed, row in enumerate(RISE_ROWS):
        number = row["index"].rsplit("_", 1)[1]
        image = f"{row['category']}_images/{number}.png"
        full = {**row, "instruction": f"Draw {row['index']}.", "image": image}
        for key in ("image", "reference_img"):
            if key in full:
                path = data / full[key]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(image_bytes(24, 24, seed=seed + (50 if key != "image" else 0)))
        rows.append(full)
    (data / "data_total.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return parent
