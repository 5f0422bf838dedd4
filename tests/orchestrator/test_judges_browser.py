"""agreement.html and leaderboard.html in headless Chromium, with 3 and with 12 runs, long run
names and CJK category names. The screenshots stay in the test's folder (and are copied to
``EDITBENCH_SCREENSHOT_DIR`` when it is set: that is how docs/ got its pictures)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.fakes import FakeServices
from tests.orchestrator.test_compare import run_sample
from tests.orchestrator.test_report_browser import browse, chromium, screenshot
from tests.orchestrator.test_rescore import other_judge, rescore

pytestmark = pytest.mark.browser

__all__ = ["chromium"]  # the fixture, imported for this module's tests

CATEGORIES = [
    "物理",
    "风格迁移",
    "文字编辑",
    "背景替换",
    "人物姿态",
    "color",
    "removal",
    "object addition with several constraints",
    "材质",
    "光照与阴影",
    "タイポグラフィ",
    "portrait retouching",
]
EDITORS = [
    "Qwen-Image-Edit-2509",
    "qwen-image-edit-2509-lightning-8-steps-fp8-e4m3-with-regional-compile-seed-42",
    "FLUX.1-Kontext-dev",
    "Step1X-Edit-v1.2",
    "BAGEL-7B-MoT-think",
    "OmniGen2",
    "ICEdit-MoE-LoRA",
    "UniWorld-V1",
    "AnyEdit",
    "InstructPix2Pix",
    "MagicBrush",
    "gpt-image-1 (remote, OpenAI-compatible /v1/images/edits)",
]


def keep(path: Path) -> None:
    target = os.environ.get("EDITBENCH_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("judges-browser")
    rows = [
        {"id": f"c{c}-{i}", "category": name, "instruction": f"{name}: edit {i} of item {c}"}
        for c, name in enumerate(CATEGORIES)
        for i in range(3)
    ]
    manifest = write_manifest(folder / "bench", rows)
    made = []
    for index, editor in enumerate(EDITORS):
        run = folder / re.sub(r"[^A-Za-z0-9._-]+", "_", editor)
        shift = (11 - index) * 0.35

        def by_category(category: str, s: float = shift) -> float:
            return s + (0.8 if category in ("物理", "color") and s > 2 else 0.0)

        run_sample(run, FakeServices(sc_shift=by_category), benchmark=str(manifest))
        made.append(run)
    judge = other_judge()
    judge.sc_shift = lambda category: 1.0 if category == "文字编辑" else 0.0
    rescore(made[0], judge)
    return made


def test_agreement_page_renders_with_cjk_categories(
    chromium: str, runs: list[Path], tmp_path: Path
) -> None:
    shown = CliRunner().invoke(
        app, ["agreement", str(runs[0]), "--out", str(tmp_path), "--resamples", "300"]
    )
    assert shown.exit_code == 0, shown.output
    page = (tmp_path / "agreement.html").resolve()
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"https?://", html)
    dom = browse(chromium, page.as_uri(), "--dump-dom")
    for name in CATEGORIES:
        assert name in dom
    assert dom.count("<circle") == 36  # one point per item both judges scored
    screenshot(chromium, page.as_uri(), tmp_path / "agreement.png", 1500)
    keep(tmp_path / "agreement.png")


@pytest.mark.parametrize("count", [3, 12])
def test_leaderboard_page_renders_with_3_and_12_runs(
    chromium: str, runs: list[Path], tmp_path: Path, count: int
) -> None:
    out = tmp_path / "board"
    chosen = runs[:count]
    shown = CliRunner().invoke(app, ["leaderboard", *map(str, chosen), "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    page = (out / "leaderboard.html").resolve()
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"https?://", html)
    dom = browse(chromium, page.as_uri(), "--dump-dom")
    assert dom.count('<td class="model">') == count
    for run in chosen:
        assert run.name in dom
    for name in CATEGORIES:
        assert name in dom
    path = tmp_path / f"leaderboard-{count}.png"
    screenshot(chromium, page.as_uri(), path, 700 if count == 3 else 1300)
    keep(path)
