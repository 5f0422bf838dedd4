"""``--benchmark owner/name``: a hub dataset id read from the local Hugging Face cache only.

The cache is built here in huggingface_hub's documented layout
(``datasets--owner--name/refs/main`` holding a commit hash, ``snapshots/<hash>/...`` the files),
so nothing is downloaded; without it the CLI says which command fetches it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestrator.benchmarks import BenchmarkError, is_hub_id, load_benchmark
from orchestrator.config import resolve_settings
from orchestrator.runner import default_out
from tests.orchestrator.harness import cli_env
from tests.orchestrator.test_benchmarks import gedit_table

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str = "stepfun-ai/GEdit-Bench") -> Path:
    """A hub cache holding one snapshot of a GEdit-Bench-like dataset (parquet under data/)."""
    owner, name = repo_id.split("/")
    repo = cache / f"datasets--{owner}--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    snapshot = repo / "snapshots" / COMMIT
    (snapshot / "data").mkdir(parents=True)
    table, _ = gedit_table()
    pq.write_table(table, snapshot / "data" / "train-00000-of-00001.parquet")
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder called stepfun-ai/
    return cache


def test_a_hub_id_loads_the_cached_snapshot(hub_cache: Path) -> None:
    fill_cache(hub_cache)
    bench = load_benchmark("stepfun-ai/GEdit-Bench")
    assert bench.format == "gedit"
    assert bench.name == "GEdit-Bench"
    assert len(bench.items) == 6
    assert {i.language for i in bench.items} == {"en", "cn"}


def test_a_hub_id_at_a_revision_loads_that_snapshot(hub_cache: Path) -> None:
    fill_cache(hub_cache)
    assert len(load_benchmark(f"stepfun-ai/GEdit-Bench@{COMMIT}").items) == 6


def test_a_hub_id_missing_from_the_cache_names_the_download_command(hub_cache: Path) -> None:
    with pytest.raises(BenchmarkError) as caught:
        load_benchmark("stepfun-ai/GEdit-Bench")
    message = str(caught.value)
    assert "hf download stepfun-ai/GEdit-Bench --repo-type dataset" in message
    assert "does not download" in message


def test_an_existing_local_folder_wins_over_a_hub_id(hub_cache: Path, tmp_path: Path) -> None:
    local = tmp_path / "stepfun-ai" / "GEdit-Bench" / "data"
    local.mkdir(parents=True)
    table, _ = gedit_table(n_per_lang=1)
    pq.write_table(table, local / "x.parquet")
    assert not is_hub_id("stepfun-ai/GEdit-Bench")
    assert len(load_benchmark("stepfun-ai/GEdit-Bench").items) == 2


def test_settings_keep_a_hub_id_and_name_the_run_after_the_dataset(hub_cache: Path) -> None:
    settings = resolve_settings({"benchmark": "stepfun-ai/GEdit-Bench"}, environ={})
    assert settings.benchmark == "stepfun-ai/GEdit-Bench"
    assert default_out(settings.benchmark).name.startswith("GEdit-Bench-")
    assert is_hub_id("a/b") and not is_hub_id("./a/b") and not is_hub_id("a/b/c")


def _cli(cache: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cli_env().items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_run_without_the_dataset_fails_clearly_without_a_traceback(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    result = _cli(
        cache,
        tmp_path,
        "run",
        "--benchmark",
        "stepfun-ai/GEdit-Bench",
        "--editor-url",
        "http://127.0.0.1:9",
        "--reward-url",
        "http://127.0.0.1:9",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "hf download stepfun-ai/GEdit-Bench --repo-type dataset" in result.stderr + result.stdout
    assert not any(cache.iterdir())  # nothing downloaded
