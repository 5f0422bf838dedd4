"""Several judges and a leaderboard on the real services (uvicorn, tiny models on the CPU).

One run is scored by the ``tiny`` judge and rescored by ``tiny-moe``: ``editbench agreement``
reports how far they agree. Three runs of the tiny editor with different seeds make a
leaderboard. Random-weight models mean nothing; the plumbing and the arithmetic are what is
checked (against scipy, from the run folders' own results files).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy import stats as sp

from orchestrator.store import JsonlLog
from tests.orchestrator.harness import editbench, finish
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def services(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    logs = tmp_path_factory.mktemp("logs")
    editor = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": "tiny",
            "EDITOR_DEVICES": "cpu",
            "EDITOR_CACHE_DIR": str(model_cache),
            **REUSE_FREED_MEMORY,
        },
        logs / "editor.log",
    )
    judges = [
        ServiceProcess(
            "reward_service",
            {
                "REWARD_MODEL": model,
                "REWARD_DEVICES": "cpu",
                "REWARD_CACHE_DIR": str(model_cache),
                "REWARD_MAX_WAIT_S": "0.05",
                **REUSE_FREED_MEMORY,
            },
            logs / f"reward-{model}.log",
        )
        for model in ("tiny", "tiny-moe")
    ]
    with editor.running() as e, judges[0].running() as dense, judges[1].running() as moe:
        yield e.url, dense.url, moe.url


def run(out: Path, editor: str, reward: str, seed: int, per_category: int = 2) -> None:
    args = ["run", "--benchmark", "sample", "--limit-per-category", str(per_category)]
    args += ["--out", str(out), "--editor-url", editor, "--reward-url", reward]
    args += ["--steps", "2", "--size", "32x32", "--seed", str(seed), "--protocol", "single"]
    code, _, stderr = finish(editbench(*args))
    assert code == 0, stderr


def overall(path: Path) -> dict[str, float]:
    return {r["item_id"]: r["overall"] for r in JsonlLog(path).read() if r["scored"]}


def test_a_run_judged_by_tiny_and_tiny_moe_gives_an_agreement_report(
    services: tuple[str, str, str], tmp_path: Path
) -> None:
    editor, dense, moe = services
    folder = tmp_path / "run"
    run(folder, editor, dense, seed=1)
    code, stdout, stderr = finish(editbench("rescore", str(folder), "--reward-url", moe))
    assert code == 0, stderr
    assert "6 scored" in stdout
    code, stdout, stderr = finish(editbench("agreement", str(folder), "--resamples", "500"))
    assert code == 0, stderr
    result = json.loads((folder / "agreement.json").read_text(encoding="utf-8"))
    assert (folder / "agreement.html").is_file()
    assert result["judges"]["a"]["model"].startswith("tiny@")
    assert result["judges"]["b"]["model"].startswith("tiny-moe@")
    slug = result["judges"]["b"]["slug"]
    a, b = overall(folder / "results.jsonl"), overall(folder / f"results-{slug}.jsonl")
    ids = sorted(a)
    assert result["overall"]["n"] == len(ids) == 6
    x, y = [a[i] for i in ids], [b[i] for i in ids]
    assert result["overall"]["spearman"]["estimate"] == pytest.approx(
        sp.spearmanr(x, y).statistic, abs=1e-6
    )
    assert result["overall"]["kendall_tau_b"]["estimate"] == pytest.approx(
        sp.kendalltau(x, y).statistic, abs=1e-6
    )
    assert result["overall"]["mean_offset"]["estimate"] == pytest.approx(
        statistics.fmean(y) - statistics.fmean(x), abs=1e-6
    )
    assert set(result["categories"]) == {"color", "removal", "物理"}


def test_three_seeds_give_a_leaderboard(services: tuple[str, str, str], tmp_path: Path) -> None:
    editor, dense, _ = services
    runs = [tmp_path / f"tiny-seed-{seed}" for seed in (1, 2, 3)]
    for folder, seed in zip(runs, (1, 2, 3), strict=True):
        run(folder, editor, dense, seed, per_category=1)
    out = tmp_path / "board"
    code, _, stderr = finish(editbench("leaderboard", *map(str, runs), "--out", str(out)))
    assert code == 0, stderr
    result = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    headlines = {}
    for folder in runs:
        rows = [r for r in JsonlLog(folder / "results.jsonl").read() if r["scored"]]
        by: dict[str, list[float]] = {}
        for r in rows:
            by.setdefault(r["category"], []).append(r["overall"])
        headlines[folder.name] = statistics.fmean(statistics.fmean(v) for v in by.values())
    assert [m["label"] for m in result["models"]] == sorted(headlines, key=lambda n: -headlines[n])
    for m in result["models"]:
        assert m["headline"]["estimate"] == pytest.approx(headlines[m["label"]], abs=1e-6)
        assert m["headline"]["n"] == 3
        assert 1 <= m["rank_interval"][0] <= m["rank"] <= m["rank_interval"][1] <= 3
    assert (out / "leaderboard.html").is_file() and (out / "leaderboard.csv").is_file()
