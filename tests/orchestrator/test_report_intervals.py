"""The report's 95% interval of a mean holds at small n: Student-t with n - 1 degrees of freedom
(orchestrator.stats), checked against scipy, with n beside it on the page."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

import orchestrator.report
from orchestrator.report.breakdown import describe as describe_row
from orchestrator.report.summary import describe

SMALL = [6.0, 7.5, 4.0, 8.0]  # n = 4: t(0.975, 3) = 3.18, not 1.96


def scipy_interval(values: list[float]) -> tuple[float, float]:
    low, high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=statistics.fmean(values), scale=scipy_stats.sem(values)
    )
    return float(low), float(high)


def test_the_interval_of_a_mean_at_n_4_is_students_t() -> None:
    low, high = scipy_interval(SMALL)
    stats = describe(SMALL)
    assert stats.n == 4
    assert stats.ci95 == pytest.approx([low, high], abs=1e-4)
    normal_half = 1.96 * statistics.stdev(SMALL) / 2
    assert (high - low) / 2 > 1.5 * normal_half  # the old mean +/- 1.96 sd/sqrt(n) was too short
    assert describe_row(SMALL).ci95 == pytest.approx([low, high], abs=1e-6)


def test_no_interval_from_one_value() -> None:
    assert describe([5.0]).ci95 is None and describe([5.0]).n == 1
    assert describe_row([5.0]).ci95 is None


def test_the_reports_legend_names_the_interval_it_shows() -> None:
    """report.html's legend said mean +/- 1.96 std/sqrt(n) after the interval became Student's t."""
    template = Path(orchestrator.report.__file__).parent / "templates" / "report.html.j2"
    legend = template.read_text(encoding="utf-8")
    assert "Student's t" in legend and "t<sub>0.975, n\u22121</sub>" in legend
    assert "1.96" not in legend
