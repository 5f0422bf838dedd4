"""report.html: one page (inline CSS, SVG and JS; relative image paths or, self-contained,
data URIs; no CDN, works from disk)."""

from __future__ import annotations

from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader, select_autoescape

from orchestrator.benchmarks.reporting import ITEM_FIELDS, Reporting, truthy, value_of
from orchestrator.metrics import MetricSet
from orchestrator.provenance import Provenance
from orchestrator.records import GroupStats, ResultRow, Summary
from orchestrator.report.cost import cost_line

_env = Environment(
    loader=PackageLoader("orchestrator.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
    # provenance.json may be missing or damaged (then empty): its absent parts render empty.
    undefined=ChainableUndefined,
)

_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")


def _ticks(low: int, high: int, count: int = 5) -> list[int]:
    step = max(1, round((high - low) / count))
    return [*range(low, high, step), high] if (high - low) % step else [*range(low, high + 1, step)]


def chart(categories: dict[str, GroupStats], metrics: MetricSet) -> dict[str, Any]:
    """Geometry of a horizontal grouped bar chart, over the protocol's scale, of each of the
    run's metrics per category."""
    bar_h, gap, label_w, plot_w = 12, 14, 180, 460
    low, high = metrics.scale.min, metrics.scale.max
    colours = {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(metrics.names)}
    groups = []
    y = 24
    for name, stats in categories.items():
        bars = []
        for index, metric in enumerate(metrics.names):
            mean = stats.metric(metric).mean
            bars.append(
                {
                    "metric": metrics.label(metric),
                    "colour": colours[metric],
                    "y": y + index * bar_h,
                    "width": 0 if mean is None else plot_w * (mean - low) / (high - low),
                    "value": "n/a" if mean is None else f"{mean:.2f}",
                }
            )
        n = stats.metric(metrics.headline).n
        groups.append({"name": name, "n": n, "y": y, "bars": bars})
        y += len(metrics.names) * bar_h + gap
    return {
        "groups": groups,
        "height": y + 10,
        "width": label_w + plot_w + 60,
        "label_w": label_w,
        "plot_w": plot_w,
        "ticks": [
            {"x": label_w + plot_w * (t - low) / (high - low), "label": t}
            for t in _ticks(low, high)
        ],
        "legend": [{"label": metrics.label(m), "colour": colours[m]} for m in metrics.names],
        "bar_h": bar_h,
    }


def status_of(row: ResultRow) -> str:
    """One word per item for the page's filter: what happened to it."""
    if row.edit_status == "failed" and not row.edited_image:
        return "edit failed"
    if row.score_status == "failed":
        return "judge failed"
    if row.score_status == "ok":
        return "scored" if row.scored else "unscored"
    return "pending"


def problem_of(row: ResultRow) -> str | None:
    """The error (or unscored reason) of a failed or unscored item, as one line."""
    error = row.edit_error or row.score_error
    if error is not None:
        return f"{error.type}: {error.message}"
    if row.score_status == "ok" and not row.scored:
        reasons = [
            f"{q.name}: {q.error or 'no score'}" for q in row.questions or [] if q.score is None
        ]
        return "unscored: " + ("; ".join(reasons) or "the judge's answer had no score")
    return None


def facets_of(reporting: Reporting, rows: list[ResultRow]) -> list[dict[str, Any]]:
    """Filters beyond category and language: the benchmark's other group-by keys and its
    subsets (GEdit-Bench: Intersection_exist yes/no)."""
    facets: list[dict[str, Any]] = []
    for key in reporting.group_by:
        if key not in ITEM_FIELDS:
            facets.append({"key": key, "label": reporting.label(key), "subset": False})
    for name, column in reporting.subsets.items():
        facets.append({"key": column, "label": name, "subset": True})
    for facet in facets:
        facet["values"] = sorted({facet_value(row, facet) for row in rows})
    return facets


def facet_value(row: ResultRow, facet: dict[str, Any]) -> str:
    value = value_of(row, facet["key"])
    if facet["subset"]:
        try:
            return "yes" if truthy(value) else "no"
        except ValueError:
            return "no"
    return "" if value is None else str(value)


def histograms(rows: list[ResultRow], metrics: MetricSet) -> list[dict[str, Any]]:
    """Per category (and all items first): counts of the headline metric in (at most) ten
    equal bins over the protocol's scale."""
    metric, low, high = metrics.headline, metrics.scale.min, metrics.scale.max
    bins = min(10, high - low)
    width = (high - low) / bins
    groups: dict[str, list[float]] = {"all items": []}
    for row in rows:
        value = row.metric(metric)
        if row.scored and value is not None:
            groups["all items"].append(value)
            groups.setdefault(row.category, []).append(value)
    found = []
    for name, values in groups.items():
        counts = [0] * bins
        for value in values:
            counts[min(bins - 1, max(0, int((value - low) / width)))] += 1
        top = max(counts) or 1
        mean = sum(values) / len(values) if values else None
        step = 200 / bins
        found.append(
            {
                "name": name,
                "n": len(values),
                "mean": mean,
                "bars": [
                    {
                        "x": round(20 + i * step, 1),
                        "w": round(step - 2, 1),
                        "h": round(60 * c / top, 1),
                        "count": c,
                        "low": f"{low + i * width:g}",
                        "high": f"{low + (i + 1) * width:g}",
                    }
                    for i, c in enumerate(counts)
                ],
                "mean_x": None if mean is None else round(20 + (mean - low) / width * step, 1),
                "ticks": [
                    {"x": round(20 + (t - low) / (high - low) * 200, 1), "label": t}
                    for t in _ticks(low, high)
                ],
            }
        )
    return found


def render_html(
    *,
    summary: Summary,
    rows: list[ResultRow],
    provenance: Provenance,
    images: dict[str, str],
) -> str:
    """The page. ``images`` maps the relative path of each image that exists to its ``src``
    (the path itself, or a data URI in a self-contained page); others are omitted."""
    facets = facets_of(summary.reporting, rows)
    view = [
        {
            **row.dump(),
            "status": status_of(row),
            "problem": problem_of(row),
            "facets": [facet_value(row, f) for f in facets],
        }
        for row in rows
    ]
    return _env.get_template("report.html.j2").render(
        summary=summary,
        rows=view,
        problems=[row for row in view if row["problem"]],
        categories=sorted({row.category for row in rows}),
        languages=sorted({row.language for row in rows if row.language}),
        statuses=["scored", "unscored", "edit failed", "judge failed", "pending"],
        facets=facets,
        histograms=histograms(rows, summary.metric_set),
        provenance=provenance.dump(),
        chart=chart(summary.categories, summary.metric_set),
        images=images,
        cost_line=cost_line(summary.judge_cost),
    )
