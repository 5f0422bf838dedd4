"""Several endpoints, one misbehaving (issue 31, class 9): real editor services on loopback, one
of them behind a proxy that misbehaves on job calls (tests/support/misbehaving_proxy.py). The
run finishes with every item edited once, by a well-behaved replica:

- a replica answering 200 with garbage is set aside; its items are edited elsewhere, not failed;
- a replica answering 429 is not chosen again over an idle one while its Retry-After runs;
- a replica whose model revision changes mid-run is not used again, and no answer of the other
  revision is recorded under this run's job ids.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import resolve_settings
from orchestrator.phases.base import ModelChanged
from orchestrator.progress import NullProgress
from orchestrator.retry import RetryPolicy
from orchestrator.runner import run_benchmark
from tests.orchestrator.test_endpoints import Service, benchmark, records, started
from tests.support.misbehaving_proxy import MisbehavingProxy

ITEMS = 8


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    folder = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        a, b = (Service("editor_service", folder, f"editor-{n}") for n in "ab")
        judge = Service("reward_service", folder, "judge")
        started(stack, a, b, judge)
        yield {"a": a, "b": b, "judge": judge}


def run(tmp_path: Path, editors: list[str], judge: str) -> Path:
    out = tmp_path / "run"
    settings = resolve_settings(
        {
            "benchmark": str(benchmark(tmp_path, ITEMS)),
            "out": out,
            "editor_url": ",".join(editors),
            "reward_url": judge,
            "steps": 2,
            "protocol": "single",
        },
        environ={},
    )
    policy = RetryPolicy(job_deadline_s=300, probe_interval_s=0.05, max_backoff_s=0.5)
    asyncio.run(run_benchmark(settings, NullProgress(), policy=policy))
    return out


def edit_endpoints(out: Path) -> dict[str, dict[str, Any]]:
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    found: dict[str, dict[str, Any]] = {}
    for invocation in provenance["invocations"]:
        for endpoint in (invocation.get("endpoints") or {}).get("editor", {}).get("endpoints", []):
            found[endpoint["url"]] = endpoint
    return found


def every_item_edited_once(out: Path) -> list[dict[str, Any]]:
    edits = records(out / "edits.jsonl")
    ok = [e for e in edits if e["status"] == "ok"]
    assert sorted(e["item_id"] for e in ok) == [f"i{k:02d}" for k in range(ITEMS)]
    assert all(e["status"] == "ok" for e in edits), [e.get("error") for e in edits]
    return ok


@pytest.mark.parametrize("mode", ["garbage", "busy", "revision"])
def test_one_misbehaving_replica_never_fails_or_mixes_the_run(
    services: dict[str, Service], tmp_path: Path, mode: str
) -> None:
    with MisbehavingProxy(services["a"].url, mode).running() as proxy:
        out = run(tmp_path, [proxy.url, services["b"].url], services["judge"].url)
    ok = every_item_edited_once(out)
    revisions = {e["model"]["revision"] for e in ok}
    assert "redeployed-other-revision" not in revisions
    assert proxy.posts >= 1  # it was tried
    assert proxy.posts <= 4, proxy.posts  # and then left alone (4: the first concurrent picks)
    scores = records(out / "scores.jsonl")
    assert sorted(s["item_id"] for s in scores if s["status"] == "ok") == sorted(
        e["item_id"] for e in ok
    )


def test_a_lone_endpoint_redeployed_with_another_revision_stops_the_run_unrecorded(
    services: dict[str, Service], tmp_path: Path
) -> None:
    with (
        MisbehavingProxy(services["a"].url, "revision").running() as proxy,
        pytest.raises(ModelChanged, match="redeployed-other-revision"),
    ):
        run(tmp_path, [proxy.url], services["judge"].url)
    edits = (
        records(tmp_path / "run" / "edits.jsonl")
        if (tmp_path / "run" / "edits.jsonl").exists()
        else []
    )
    assert not [e for e in edits if e["status"] == "ok"]
    assert proxy.posts >= 1
