"""report.html and compare.html in a real browser (headless Chromium): they render from disk
with no network, the item filters run, and the screenshots stay in the test's folder to look at.

CI installs Chromium (.ci/run) and sets EDITBENCH_REQUIRE_BROWSER=1, so there these never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.orchestrator.fakes import FakeServices, error
from tests.orchestrator.test_compare import run_sample

pytestmark = pytest.mark.browser

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("EDITBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail("EDITBENCH_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no headless Chromium on PATH (apt-get install chromium)")
    return CHROMIUM


def browse(chromium: str, url: str, *args: str) -> str:
    """Chromium headless, offline: no network access at all beyond the file it opens."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",  # a CDN fetch would fail, and show up as broken
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def visible_rows(dom: str) -> list[bool]:
    """Per item row, in the page's order: whether the filters left it shown."""
    rows = re.findall(r"<tr id=\"item-\d+\"[^>]*>", dom)
    assert rows
    return [" hidden" not in row for row in rows]


def screenshot(chromium: str, url: str, path: Path, height: int) -> Image.Image:
    browse(chromium, url, f"--screenshot={path}", f"--window-size=1280,{height}")
    image = Image.open(path).convert("RGB")
    # Something was drawn: many colours, not an empty white page.
    assert len(image.resize((160, 160)).getcolors(maxcolors=160 * 160) or []) > 40
    return image


def runs(tmp_path: Path) -> tuple[Path, Path]:
    async def refuse_one(request: httpx.Request) -> httpx.Response | None:
        if b"Remove the text" in request.content:
            return error(400, "invalid_request", "the editor refuses this image")
        return None

    a, b = tmp_path / "model-a", tmp_path / "model-b"
    run_sample(a, FakeServices(before_edit=refuse_one))
    run_sample(
        b, FakeServices(sc_shift=lambda category: 1.5 if category == "color" else 0.0), steps=3
    )
    return a, b


def test_report_and_compare_pages_render_and_filter_in_chromium(
    chromium: str, tmp_path: Path
) -> None:
    a, b = runs(tmp_path)
    report = (a / "report.html").resolve()
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"https?://", html)  # nothing from a CDN

    screenshot(chromium, report.as_uri(), tmp_path / "report.png", 2200)
    dom = browse(chromium, report.as_uri(), "--dump-dom")
    assert "12 of 12 items" in dom  # the page's script ran
    failed = browse(chromium, report.as_uri() + "?status=edit+failed", "--dump-dom")
    assert "1 of 12 items" in failed
    assert "the editor refuses this image" in failed
    searched = browse(chromium, report.as_uri() + "?q=circle&category=color", "--dump-dom")
    assert "1 of 12 items" in searched
    # The score range: the count and the rows left visible are those the records say.
    lines = (a / "results.jsonl").read_text(encoding="utf-8").splitlines()
    overall = [json.loads(line)["overall"] for line in lines]
    for query, low, high in (("?min=6", 6.0, 10.0), ("?min=2.5&max=7", 2.5, 7.0)):
        ranged = browse(chromium, report.as_uri() + query, "--dump-dom")
        inside = [x is not None and low <= x <= high for x in overall]
        assert 0 < sum(inside) < len(overall)  # a filter that shows all or none proves nothing
        assert f"{sum(inside)} of 12 items" in ranged
        assert visible_rows(ranged) == inside

    # The filters are written into the address (so a view can be shared): the page rewrites it
    # from its own state, dropping what it does not filter by, and links to it.
    shared = browse(chromium, report.as_uri() + "?min=6&nosuch=1&status=", "--dump-dom")
    assert 'id="f-link" href="report.html?min=6"' in shared
    assert f'data-address="{report.as_uri()}?min=6"' in shared
    both = browse(chromium, report.as_uri() + "?category=color&q=circle", "--dump-dom")
    assert 'href="report.html?q=circle&amp;category=color"' in both
    # Each 95% interval of a mean says how many values it rests on.
    assert re.search(r"\d\.\d\d\u2013\d+\.\d\d <span class=\"muted\">n=\d+</span>", dom)

    compare = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert compare.exit_code == 0, compare.output
    compare_page = (tmp_path / "cmp" / "compare.html").resolve().as_uri()
    screenshot(chromium, compare_page, tmp_path / "compare.png", 1600)
    shown = browse(chromium, compare_page, "--dump-dom")
    # Each run's own warnings (random-weight fakes), what differs, each run's report linked.
    assert shown.count('class="warn run-warning"') >= 2 and "random" in shown
    steps_row = re.search(r"<tr><td>steps</td>(.*?)</tr>", shown, re.S)
    assert steps_row is not None and re.findall(r"<code>(\d+)</code>", steps_row[1]) == ["2", "3"]
    assert 'href="../model-a/report.html"' in shown and 'href="../model-b/report.html"' in shown
    # The items that moved most, largest |difference| first, as the records say.
    before, after = (
        {r["item_id"]: r["overall"] for r in map(json.loads, lines)}
        for lines in (
            (run / "results.jsonl").read_text(encoding="utf-8").splitlines() for run in (a, b)
        )
    )
    paired = [i for i in before if before[i] is not None and after.get(i) is not None]
    paired = [i for i in paired if abs(after[i] - before[i]) > 1e-9]  # unchanged: not listed
    expected = sorted(paired, key=lambda i: (-abs(after[i] - before[i]), i))[:12]
    moved = re.search(r'<table class="moved">(.*?)</table>', shown, re.S)
    assert moved is not None
    assert re.findall(r'<tr data-id="([^"]+)">', moved[1]) == expected
    assert abs(after[expected[0]] - before[expected[0]]) > 0

    # Self-contained: one file, thumbnails inside, still renders once moved away from its run.
    shown = CliRunner().invoke(app, ["report", str(a), "--self-contained"])
    assert shown.exit_code == 0, shown.output
    alone = tmp_path / "mailed" / "report.html"
    alone.parent.mkdir()
    shutil.copy(a / "report.html", alone)
    text = alone.read_text(encoding="utf-8")
    assert "data:image/jpeg;base64," in text
    assert not re.search(r"src=\"thumbs/", text)
    image = screenshot(chromium, alone.as_uri() + "?category=color", tmp_path / "mailed.png", 3000)
    assert image.size == (1280, 3000)


def test_a_gedit_report_filters_by_language_and_intersection_in_chromium(
    chromium: str, tmp_path: Path
) -> None:
    from tests.orchestrator.test_reporting import gedit_layout, run_fake

    rows = gedit_layout(tmp_path / "GEdit-Bench")
    run_fake(tmp_path / "GEdit-Bench", tmp_path / "run")
    report = (tmp_path / "run" / "report.html").resolve()
    total = len(rows)
    both = sum(1 for r in rows if r["Intersection_exist"] and r["instruction_language"] == "cn")
    dom = browse(chromium, report.as_uri() + "?Intersection_exist=yes&language=cn", "--dump-dom")
    assert f"{both} of {total} items" in dom
    assert "every task_type" in dom
    screenshot(chromium, report.as_uri(), tmp_path / "gedit-report.png", 1800)
