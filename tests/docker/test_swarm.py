"""docker-stack.yml for real: a single-node swarm, 2 editor and 2 judge replicas on tiny models.

``editbench run`` runs as a container on the stack's overlay network with
``http://tasks.editor:8001`` and ``http://tasks.reward:8002``: Swarm's DNS gives it every healthy
replica, and it spreads the jobs over all four (counted from each replica's own /metrics, read
inside its container). One editor replica is SIGKILLed mid-run; Swarm starts another; the run
still ends with exactly one record per item. API keys come from Swarm secrets. The swarm is left
as found: the stack, its secrets, network and volume removed, and the swarm left only if this
test made it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import JsonlLog, RunStore
from tests.docker.compose import docker
from tests.docker.documented import Renames, bash_block, command, run_bash
from tests.docker.swarm import Stack, metric, single_node_swarm, swarm_state, wait_until
from tests.orchestrator.conftest import write_manifest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

ITEMS = 10
EDITOR_KEY, REWARD_KEY = "swarm-editor-key", "swarm-reward-key"
JOBS = {"editor": (8001, "/v1/edits", "editor_http_requests_total", EDITOR_KEY)}
JOBS["reward"] = (8002, "/v1/scores", "reward_http_requests_total", REWARD_KEY)


@pytest.fixture(scope="module")
def stack(
    images: dict[str, str], tmp_path_factory: pytest.TempPathFactory, docker_logs: Path
) -> Iterator[Stack]:
    """docker-stack.yml deployed, all four replicas healthy; removed afterwards."""
    before = swarm_state()
    keys = tmp_path_factory.mktemp("keys")
    (keys / "editor").write_text(EDITOR_KEY)
    (keys / "reward").write_text(REWARD_KEY)
    with single_node_swarm():
        deployed = Stack(
            f"ebswarm{os.getpid()}",
            env={
                "EDITBENCH_EDITOR_IMAGE": images["editor"],
                "EDITBENCH_REWARD_IMAGE": images["reward"],
                "EDITBENCH_EDITOR_KEYS_FILE": str(keys / "editor"),
                "EDITBENCH_REWARD_KEYS_FILE": str(keys / "reward"),
            },
        )
        try:
            deployed.deploy(docker_logs / "stack-deploy.log")
            wait_until(
                lambda: all(len(deployed.healthy(s)) == 2 for s in JOBS),
                "two healthy replicas of each service",
                timeout_s=1200,
            )
            yield deployed
        finally:
            deployed.remove(docker_logs)
            assert deployed.leftovers() == {}
    assert swarm_state() == before


def answered(stack: Stack, container: str, service: str) -> float:
    port, route, name, _ = JOBS[service]
    text = stack.fetch(container, port, "/metrics").split("\n", 1)[1]
    return metric(text, name, method="POST", route=route, status="200")


def test_replicas_take_their_api_keys_from_swarm_secrets(stack: Stack) -> None:
    for service, (port, _, _, key) in JOBS.items():
        containers = stack.containers(service)
        assert len(containers) == 2, service  # every replica checked, and some are
        for container in containers:
            assert stack.fetch(container, port, "/v1/info").startswith("401\n")
            status, body = stack.fetch(container, port, "/v1/info", key).split("\n", 1)
            assert status == "200"
            assert json.loads(body)["model"]["source"] == "tiny"


def test_run_spreads_over_all_replicas_and_survives_one_killed(
    stack: Stack, images: dict[str, str], tmp_path: Path, docker_logs: Path
) -> None:
    runs = tmp_path / "runs"
    rows = [
        {"id": f"s{n:02d}", "category": ("color", "物理")[n % 2], "instruction": f"edit {n}"}
        for n in range(ITEMS)
    ]
    write_manifest(runs / "bench", rows)
    editors, judges = stack.containers("editor"), stack.containers("reward")
    assert (len(editors), len(judges)) == (2, 2)
    start = {c: answered(stack, c, "editor") for c in editors}
    start |= {c: answered(stack, c, "reward") for c in judges}
    cli = docker(
        "run",
        "--detach",
        "--label",  # removed by a later run if this one is killed (tests/docker/leftovers.py)
        f"editbench.test-pid={os.getpid()}",
        "--network",
        f"{stack.name}_editbench",
        "--user",  # as docs/DEPLOY.md: the run folder belongs to whoever ran it
        f"{os.getuid()}:{os.getgid()}",
        "--volume",
        f"{runs}:/workspace/runs",
        "--env",
        f"EDITBENCH_PATH_MAP=/workspace/runs={runs}",
        "--env",
        "EDITBENCH_EDITOR_URL=http://tasks.editor:8001",
        "--env",
        "EDITBENCH_REWARD_URL=http://tasks.reward:8002",
        "--env",
        f"EDITBENCH_EDITOR_API_KEY={EDITOR_KEY}",
        "--env",
        f"EDITBENCH_REWARD_API_KEY={REWARD_KEY}",
        images["orchestrator"],
        "editbench",
        "run",
        "--benchmark",
        "runs/bench/manifest.jsonl",
        "--steps",
        "2",
        "--size",
        "32x32",
        "--protocol",
        "single",
        "--out",
        "runs/swarm",
    ).strip()
    try:
        # Kill an editor replica that has answered some of this run's edits (with more in
        # flight on it: two per worker), while edits remain.
        done: dict[str, float] = {}

        def one_has_answered() -> bool:
            state = docker("inspect", "--format", "{{.State.Status}}", cli).strip()
            assert state == "running", f"editbench exited early: {docker('logs', cli)[-2000:]}"
            done.update({c: answered(stack, c, "editor") - start[c] for c in editors})
            assert sum(done.values()) <= ITEMS - 4, "the edit phase ended before the kill"
            return max(done.values()) >= 1

        wait_until(one_has_answered, "an edit answered by an editor replica", timeout_s=1800)
        victim = max(done, key=lambda c: done[c])
        docker("kill", victim)
        survivor = next(c for c in editors if c != victim)
        code = int(docker("wait", cli, timeout=3000).strip())
        logs = docker("logs", cli)
    finally:
        (docker_logs / "swarm-cli.log").write_text(docker("logs", cli, check=False))
        docker("rm", "--force", cli, check=False)

    assert code == 0, logs[-4000:]
    out = runs / "swarm"
    edits = [dict(r) for r in JsonlLog(out / "edits.jsonl").read()]
    scores = [dict(r) for r in JsonlLog(out / "scores.jsonl").read()]
    expected = {f"s{n:02d}": 1 for n in range(ITEMS)}
    assert Counter(r["item_id"] for r in edits) == expected
    assert Counter(r["item_id"] for r in scores) == expected
    assert all(r["status"] == "ok" for r in edits + scores)
    # every one of the four replicas did some of the work, by its own count
    assert done[victim] >= 1
    assert answered(stack, survivor, "editor") - start[survivor] > 0
    for judge in judges:
        assert answered(stack, judge, "reward") - start[judge] > 0
    provenance: dict[str, Any] = json.loads((out / "provenance.json").read_text("utf-8"))
    editor_endpoints = provenance["services"]["editor"]["endpoints"]
    assert sum(e["jobs_ok"] for e in editor_endpoints) == ITEMS
    assert any(e["set_aside"] >= 1 for e in editor_endpoints)  # the killed replica
    reward_endpoints = provenance["services"]["reward"]["endpoints"]
    assert len([e for e in reward_endpoints if e["jobs_ok"] > 0]) == 2
    assert len(provenance["services"]["editor"]["models"]) == 1
    # As docs/DEPLOY.md says: each replica's jobs printed, the host's report path, files the
    # invoking user owns.
    counted_line = next(line for line in logs.splitlines() if line.startswith("editor replicas: "))
    assert counted_line.count(" job") == len(editor_endpoints)
    assert any(line.startswith("reward replicas: ") for line in logs.splitlines())
    assert f"report: {out / 'report.html'}" in logs
    assert {p.stat().st_uid for p in out.rglob("*")} == {os.getuid()}


def _exists(kind: str, name: str) -> bool:
    listed = {
        "service": ["service", "ls", "--format", "{{.Name}}"],
        "volume": ["volume", "ls", "--format", "{{.Name}}"],
        "container": ["ps", "--all", "--format", "{{.Names}}"],
    }[kind]
    return name in docker(*listed).split()


def test_the_one_off_task_its_results_and_the_clean_up_run_as_deploy_md_writes_them(
    stack: Stack, images: dict[str, str], tmp_path: Path, docker_logs: Path
) -> None:
    """DEPLOY.md's one-off task, its `docker cp` of the results and its clean-up, each taken
    from the page and run by bash as written (the stack under this test's own name). Last in
    this module: the clean-up removes the stack."""
    assert images["orchestrator"] == "editbench/orchestrator:latest"  # the page's image
    names = {"service": "editbench-run", "volume": "editbench-runs"}
    names["container"] = "editbench-results"
    taken = [f"{kind} {name}" for kind, name in names.items() if _exists(kind, name)]
    assert not taken, f"this engine already has {taken}: the test would take them over"
    rename = Renames(stack.name)
    keys = Path(stack.env["EDITBENCH_EDITOR_KEYS_FILE"]).parent
    env = {**os.environ, "keys": str(keys)}
    one_off = rename(command(bash_block("--name editbench-run"), "docker service create"))
    try:
        # Returns at once (--detach); the task's end is waited for below, as the page says.
        run_bash(one_off, cwd=tmp_path, env=env, timeout=900, log=docker_logs / "one-off.log")

        def ended() -> bool:
            state = docker("service", "ps", "--format", "{{.CurrentState}}", "editbench-run")
            return state.split(" ", 1)[0] in ("Complete", "Failed", "Rejected", "Shutdown")

        wait_until(ended, "end of the one-off task", timeout_s=1800)
        logs = docker("service", "logs", "--raw", "editbench-run", timeout=120)
        state = docker("service", "ps", "--format", "{{.CurrentState}}", "editbench-run")
        assert state.startswith("Complete"), f"{state}\n{logs[-4000:]}"
        # Its results out of the volume, as the page says, into ./runs of the caller.
        results = rename(bash_block("docker cp editbench-results"))
        run_bash(results, cwd=tmp_path, env=env, timeout=300, log=docker_logs / "results.log")
        assert not _exists("container", "editbench-results")  # the page removes it again
    finally:
        (docker_logs / "one-off-task.log").write_text(
            docker("service", "logs", "--raw", "editbench-run", timeout=120, check=False)
        )

    out = tmp_path / "runs" / "sample"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    micro = summary["overall"]["micro"]
    assert (micro["n_items"], micro["edited"], micro["scored"]) == (12, 12, 12)
    assert (out / "report.html").is_file() and len(list((out / "edits").iterdir())) == 12
    assert {p.stat().st_uid for p in out.rglob("*")} == {os.getuid()}  # docker cp: the caller's
    provenance = RunStore(out).read_provenance()
    assert provenance.services.editor is not None and provenance.services.reward is not None
    for service in (provenance.services.editor, provenance.services.reward):
        assert [e.jobs_ok > 0 for e in service.endpoints or []] == [True, True]
    assert any(line.startswith("editor replicas: ") for line in logs.splitlines())

    # The clean-up, in the page's order: nothing of the task, the stack or the keys is left.
    clean_up = rename(bash_block("docker service rm editbench-run"))
    run_bash(clean_up, cwd=tmp_path, env=env, timeout=600, log=docker_logs / "clean-up.log")
    assert not _exists("service", "editbench-run") and not _exists("volume", "editbench-runs")
    assert not keys.exists()
    wait_until(lambda: stack.leftovers() == {}, "nothing left of the stack", timeout_s=300)
