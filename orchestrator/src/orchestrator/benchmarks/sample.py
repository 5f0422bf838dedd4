"""The sample benchmark: 3 categories x 4 items, drawn by this script, shipped with the package.

``editbench sample OUT_DIR`` writes a manifest and 256x256 PNGs with simple shapes and clear
instructions, so the demo and the tests run offline. The copy in ``sample_data/`` next to this file
is this script's output (``editbench sample --bundled`` rewrites it); a test keeps them equal.
One category is named 物理 (physics) and two instructions are Chinese: Unicode end to end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

SIZE = 256
RGB = tuple[int, int, int]
# One drawing call: ImageDraw method name, its xy argument, its keyword arguments.
Shape = tuple[str, Any, dict[str, Any]]


@dataclass(frozen=True)
class SampleItem:
    id: str
    category: str
    instruction: str
    shapes: tuple[Shape, ...]
    background: RGB = (235, 235, 225)
    language: str = "en"
    hints: str | None = None


GROUND: tuple[Shape, ...] = (("rectangle", (0, 200, SIZE, SIZE), {"fill": (120, 90, 60)}),)
TABLE: tuple[Shape, ...] = (
    ("rectangle", (20, 170, 236, 185), {"fill": (140, 100, 60)}),
    ("rectangle", (40, 185, 55, 250), {"fill": (110, 80, 50)}),
    ("rectangle", (200, 185, 215, 250), {"fill": (110, 80, 50)}),
)

ITEMS: tuple[SampleItem, ...] = (
    SampleItem(
        "color-01",
        "color",
        "Make the red circle blue.",
        (("ellipse", (68, 68, 188, 188), {"fill": (210, 30, 30)}),),
    ),
    SampleItem(
        "color-02",
        "color",
        "Turn the background black.",
        (("rectangle", (88, 88, 168, 168), {"fill": (240, 200, 20)}),),
        background=(250, 250, 250),
    ),
    SampleItem(
        "color-03",
        "color",
        "Change the yellow square to green.",
        (
            ("rectangle", (40, 40, 130, 130), {"fill": (240, 210, 20)}),
            ("ellipse", (140, 140, 220, 220), {"fill": (40, 60, 200)}),
        ),
    ),
    SampleItem(
        "color-04",
        "color",
        "把蓝色三角形变成红色。",
        (("polygon", [(128, 40), (220, 210), (36, 210)], {"fill": (30, 70, 210)}),),
        language="zh",
    ),
    SampleItem(
        "removal-01",
        "removal",
        "Remove the green triangle.",
        (
            ("polygon", [(60, 60), (120, 180), (20, 180)], {"fill": (30, 160, 60)}),
            ("ellipse", (140, 90, 230, 180), {"fill": (200, 40, 40)}),
        ),
    ),
    SampleItem(
        "removal-02",
        "removal",
        "Remove the small blue circle on the left.",
        (
            ("ellipse", (30, 110, 70, 150), {"fill": (30, 60, 200)}),
            ("rectangle", (120, 70, 220, 190), {"fill": (220, 120, 30)}),
        ),
    ),
    SampleItem(
        "removal-03",
        "removal",
        "Remove the text.",
        (
            ("rectangle", (50, 50, 206, 150), {"fill": (60, 120, 180)}),
            ("text", (70, 180), {"text": "EDITBENCH", "fill": (0, 0, 0)}),
        ),
    ),
    SampleItem(
        "removal-04",
        "removal",
        "Remove the striped border.",
        (
            ("rectangle", (0, 0, 8, SIZE), {"fill": (200, 0, 0)}),
            ("rectangle", (248, 0, SIZE, SIZE), {"fill": (200, 0, 0)}),
            ("ellipse", (78, 78, 178, 178), {"fill": (90, 90, 90)}),
        ),
    ),
    SampleItem(
        "physics-01",
        "物理",
        "Make the ball fall to the ground.",
        (*GROUND, ("ellipse", (108, 30, 148, 70), {"fill": (220, 60, 40)})),
        hints="The ball should rest on the brown ground, with a contact shadow.",
    ),
    SampleItem(
        "physics-02",
        "物理",
        "Melt the ice cube into a puddle.",
        (
            *TABLE,
            (
                "rectangle",
                (98, 110, 158, 170),
                {"fill": (190, 230, 250), "outline": (120, 170, 200), "width": 3},
            ),
        ),
    ),
    SampleItem(
        "physics-03",
        "物理",
        "Show the glass after it falls off the table and shatters.",
        (*TABLE, ("rectangle", (110, 110, 146, 170), {"outline": (90, 140, 170), "width": 3})),
    ),
    SampleItem(
        "physics-04",
        "物理",
        "让杯子里的水结冰。",
        (
            *TABLE,
            ("rectangle", (100, 100, 156, 170), {"outline": (80, 80, 80), "width": 3}),
            ("rectangle", (103, 125, 153, 167), {"fill": (60, 130, 220)}),
        ),
        language="zh",
    ),
)


def render(item: SampleItem) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), item.background)
    draw = ImageDraw.Draw(image)
    for method, xy, options in item.shapes:
        getattr(draw, method)(xy, **options)
    return image


def write_sample(out_dir: Path) -> Path:
    """Write the sample benchmark into ``out_dir``; returns the manifest's path."""
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in ITEMS:
        render(item).save(images / f"{item.id}.png", format="PNG", optimize=True)
        record: dict[str, str] = {
            "id": item.id,
            "category": item.category,
            "instruction": item.instruction,
            "image": f"images/{item.id}.png",
            "language": item.language,
        }
        if item.hints:
            record["hints"] = item.hints
        lines.append(json.dumps(record, ensure_ascii=False))
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def bundled_sample() -> Path:
    """The manifest of the copy shipped inside the package."""
    return Path(__file__).resolve().parent / "sample_data" / "manifest.jsonl"
