"""What a killed test run leaves on the engine goes at the next run; what a live run owns stays."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.compose import Compose, docker
from tests.docker.leftovers import TEST_PID_LABEL, remove_leftovers
from tests.docker.swarm import swarm_state, this_node

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has ended (a killed test run's)."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    return ended.pid


def labelled_container(image: str, pid: int) -> str:
    return docker(
        "run", "--detach", "--label", f"{TEST_PID_LABEL}={pid}", "--entrypoint", "sleep",
        image, "600",
    ).strip()  # fmt: skip


def exists(container: str) -> bool:
    return container in docker("ps", "--all", "--quiet", "--no-trunc").split()


@pytest.fixture
def keep_clean() -> Iterator[list[str]]:
    """Containers this test made, removed whatever it asserted."""
    made: list[str] = []
    yield made
    if made:
        docker("rm", "--force", *made, check=False)


def test_a_dead_runs_containers_and_compose_project_go_and_a_live_runs_stay(
    images: dict[str, str], dead_pid: int, keep_clean: list[str], docker_logs: Path
) -> None:
    dead = labelled_container(images["orchestrator"], dead_pid)
    live = labelled_container(images["orchestrator"], os.getpid())
    keep_clean += [dead, live]
    project = Compose(project=f"editbench-test-{dead_pid}")
    project("create", "editor")
    assert project.leftovers()["containers"]

    removed = remove_leftovers(docker_logs)

    assert not exists(dead) and exists(live)
    assert project.leftovers() == {}
    assert f"compose project editbench-test-{dead_pid}" in removed
    assert any(dead.startswith(r.split()[-1]) for r in removed if r.startswith("container "))


def test_a_swarm_a_dead_run_made_is_left_and_one_it_did_not_make_stays(
    images: dict[str, str], dead_pid: int, docker_logs: Path
) -> None:
    if swarm_state() != "inactive":
        pytest.skip("this engine is in a swarm already: the test would need to leave it")
    docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
    try:
        remove_leftovers(docker_logs)
        assert swarm_state() == "active"  # not marked as a test run's: someone's own
        docker("node", "update", "--label-add", f"{TEST_PID_LABEL}={os.getpid()}", this_node())
        remove_leftovers(docker_logs)
        assert swarm_state() == "active"  # a live run's
        docker("node", "update", "--label-add", f"{TEST_PID_LABEL}={dead_pid}", this_node())
        assert "swarm (made by a test run)" in remove_leftovers(docker_logs)
        assert swarm_state() == "inactive"
    finally:
        if swarm_state() != "inactive":
            docker("swarm", "leave", "--force", timeout=120, check=False)
