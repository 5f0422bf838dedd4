"""How ``editbench leaderboard`` shows its result: a rich table and leaderboard.html."""

from __future__ import annotations

import math
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.table import Table

from orchestrator.report.agreement_view import interval_text

_env = Environment(
    loader=PackageLoader("orchestrator.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def leaderboard_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"leaderboard · {result['benchmark'] or '-'} · {result['table']} · "
        f"ranked by {result['ranked_by']}",
        title_justify="left",
        caption="95% intervals (n items) · rank: [best, worst] rank the data allow "
        "(Holm-adjusted paired t-tests) · Δ next: paired difference to the run ranked below",
        caption_justify="left",
    )
    for name, justify in (
        ("#", "right"),
        ("rank", "right"),
        ("run", "left"),
        ("headline", "right"),
        ("n", "right"),
        ("Δ next", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    official = result["models"][0].get("official_headline") if result["models"] else None
    if official:
        table.add_column(official["label"], justify="right")
    for m in result["models"]:
        low, high = m["rank_interval"]
        nxt = m["vs_next"]
        extra = [interval_text(m["official_headline"] or {})] if official else []
        table.add_row(
            str(m["rank"]),
            f"{low}" if low == high else f"{low}-{high}",
            m["label"],
            interval_text(m["headline"], digits=3),
            str(m["headline"]["n"]),
            "-" if nxt is None else interval_text(nxt, digits=3, signed=True) + f" n={nxt['n']}",
            *extra,
        )
    return table


def _axis(result: dict[str, Any]) -> dict[str, float]:
    """A shared scale for every headline interval bar (rounded outwards)."""
    bounds = [
        v
        for m in result["models"]
        for v in (m["headline"]["low"], m["headline"]["high"], m["headline"]["estimate"])
        if v is not None
    ]
    if not bounds:
        return {"low": 0.0, "high": 1.0}
    low, high = min(bounds), max(bounds)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    step = 10 ** math.floor(math.log10(high - low))
    return {"low": math.floor(low / step) * step, "high": math.ceil(high / step) * step}


def render_leaderboard_html(result: dict[str, Any]) -> str:
    return _env.get_template("leaderboard.html.j2").render(
        result=result, axis=_axis(result), iv=interval_text
    )
