"""A run's summary is reproduced exactly by judging its edits again into a new folder.

Both services run for real (uvicorn, tiny models on the CPU), the judge in deterministic mode. The
first run scores several items per request, several requests at once; the second judges the
first run's edited images (``--phase score --edited-dir``) one item at a time, so every item
shares its forward passes with other partners (none) than the first time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import JsonlLog
from tests.orchestrator.harness import editbench, finish
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def services(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
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
    reward = ServiceProcess(
        "reward_service",
        {
            "REWARD_MODEL": "tiny",
            "REWARD_DEVICES": "cpu",
            "REWARD_CACHE_DIR": str(model_cache),
            "REWARD_DETERMINISTIC": "true",
            "REWARD_MAX_WAIT_S": "0.2",
            **REUSE_FREED_MEMORY,
        },
        logs / "reward.log",
    )
    with editor.running() as edit_service, reward.running() as score_service:
        yield edit_service.url, score_service.url


def scores_by_item(folder: Path) -> dict[str, dict[str, Any]]:
    return {r["item_id"]: r for r in JsonlLog(folder / "scores.jsonl").read()}


def test_scoring_a_runs_edits_again_reproduces_its_summary_exactly(
    services: tuple[str, str], tmp_path: Path
) -> None:
    editor, reward = services
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("--benchmark", "sample", "--limit-per-category", "2", "--reward-url", reward)
    code, _, stderr = finish(
        editbench(
            "run",
            *common,
            "--out",
            str(first),
            "--editor-url",
            editor,
            "--steps",
            "2",
            "--size",
            "32x32",
            "--items-per-request",
            "4",
            "--score-concurrency",
            "2",
        )
    )
    assert code == 0, stderr
    code, _, stderr = finish(
        editbench(
            "run",
            *common,
            "--out",
            str(second),
            "--phase",
            "score",
            "--edited-dir",
            str(first / "edits"),
            "--items-per-request",
            "1",
            "--score-concurrency",
            "1",
        )
    )
    assert code == 0, stderr
    before, after = scores_by_item(first), scores_by_item(second)
    assert len(before) >= 4 and set(before) == set(after)
    for item_id, record in before.items():
        again = after[item_id]
        assert record["status"] == again["status"] == "ok"
        assert record["deterministic"] is again["deterministic"] is True
        assert record["edited_sha256"] == again["edited_sha256"]
        assert record["score"]["questions"] == again["score"]["questions"], item_id
        assert record["metrics"] == again["metrics"]
        assert list(record["metrics"]) == ["sc", "pq", "overall"]
    summaries = [json.loads((f / "summary.json").read_text("utf-8")) for f in (first, second)]
    assert summaries[0]["overall"] == summaries[1]["overall"]
    assert summaries[0]["categories"] == summaries[1]["categories"]
