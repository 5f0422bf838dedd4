"""report.html: one self-contained page (inline CSS and SVG, relative image paths, no CDN)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from orchestrator.report.summary import METRICS

_env = Environment(
    loader=PackageLoader("orchestrator.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

_COLOURS = {"sc": "#4c78a8", "pq": "#f58518", "overall": "#54a24b"}
_LABELS = {"sc": "SC", "pq": "PQ", "overall": "Overall"}


def chart(categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Geometry of a horizontal grouped bar chart (0-10) of SC, PQ and overall per category."""
    bar_h, gap, label_w, plot_w = 12, 14, 180, 460
    groups = []
    y = 24
    for name, stats in categories.items():
        bars = []
        for index, metric in enumerate(METRICS):
            mean = stats[metric]["mean"]
            bars.append(
                {
                    "metric": _LABELS[metric],
                    "colour": _COLOURS[metric],
                    "y": y + index * bar_h,
                    "width": 0 if mean is None else plot_w * mean / 10,
                    "value": "n/a" if mean is None else f"{mean:.2f}",
                }
            )
        groups.append({"name": name, "n": stats["overall"]["n"], "y": y, "bars": bars})
        y += len(METRICS) * bar_h + gap
    return {
        "groups": groups,
        "height": y + 10,
        "width": label_w + plot_w + 60,
        "label_w": label_w,
        "plot_w": plot_w,
        "ticks": [{"x": label_w + plot_w * t / 10, "label": t} for t in range(0, 11, 2)],
        "legend": [{"label": _LABELS[m], "colour": _COLOURS[m]} for m in METRICS],
        "bar_h": bar_h,
    }


def render_html(
    *,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    provenance: dict[str, Any],
    existing: set[str],
) -> str:
    """The page. ``existing`` holds the relative paths of images that exist (others are omitted)."""
    by_category: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row)
    return _env.get_template("report.html.j2").render(
        summary=summary,
        by_category=dict(sorted(by_category.items())),
        provenance=provenance,
        chart=chart(summary["categories"]),
        existing=existing,
    )
