"""How ``editbench agreement`` shows its result: a rich table (terminal) and agreement.html."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.table import Table

_env = Environment(
    loader=PackageLoader("orchestrator.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b",
    "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#1f77b4", "#8c564b",
)  # fmt: skip


def interval_text(entry: dict[str, Any], digits: int = 2, signed: bool = False) -> str:
    """'0.71 [0.52, 0.84]' (or the estimate alone, or '-')."""
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    if entry.get("estimate") is None:
        return "-"
    text = fmt.format(entry["estimate"])
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" [{fmt.format(entry['low'])}, {fmt.format(entry['high'])}]"
    return text


def agreement_table(result: dict[str, Any]) -> Table:
    judges = result["judges"]
    table = Table(
        title=f"agreement · {result['run']['label']} · {result['metric']} · "
        f"A = {judges['a']['label']}, B = {judges['b']['label']}",
        title_justify="left",
        caption="95% intervals: BCa bootstrap (offset: Student t) · n = items both judges "
        "scored · rows from the least agreeing up",
        caption_justify="left",
    )
    table.add_column(result["group_by"])
    for name in ("n", "Spearman", "Kendall τb", "pairs agree", "offset B-A", "spread"):
        table.add_column(name, justify="right")

    def cells(entry: dict[str, Any]) -> list[str]:
        return [
            str(entry["n"]),
            interval_text(entry["spearman"]),
            interval_text(entry["kendall_tau_b"]),
            interval_text(entry["pairwise_agreement"]),
            interval_text(entry["mean_offset"], signed=True),
            interval_text(entry["offset_spread"]),
        ]

    for name in result["disagree_most"]:
        table.add_row(name, *cells(result["categories"][name]))
    table.add_section()
    table.add_row("all items", *cells(result["overall"]), style="bold")
    return table


def _scatter(result: dict[str, Any]) -> dict[str, Any]:
    """Geometry of the A-vs-B scatter plot (square, both axes on the same scale)."""
    points = result["points"]
    values = [p["a"] for p in points] + [p["b"] for p in points]
    low, high = min(values, default=0.0), max(values, default=1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = (high - low) * 0.05
    low, high = low - pad, high + pad
    size, margin = 360, 36
    scale = (size - 2 * margin) / (high - low)
    groups = sorted({p["group"] for p in points})
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    return {
        "size": size,
        "margin": margin,
        "low": low,
        "high": high,
        "points": [
            {
                "x": margin + (p["a"] - low) * scale,
                "y": size - margin - (p["b"] - low) * scale,
                "colour": colour[p["group"]],
                "title": f"{p['item']} ({p['group']}): A {p['a']:.3f}, B {p['b']:.3f}",
            }
            for p in points
        ],
        "legend": [{"name": g, "colour": colour[g]} for g in groups],
    }


def render_agreement_html(result: dict[str, Any]) -> str:
    return _env.get_template("agreement.html.j2").render(
        result=result, scatter=_scatter(result), iv=interval_text
    )
