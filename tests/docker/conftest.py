"""Docker tests: the images, the CPU stack through Compose, the GPU override's configuration.

Tests marked ``docker`` skip when no engine answers, except when EDITBENCH_REQUIRE_DOCKER=1 (CI,
after scripts/docker-env.sh): then a missing engine fails them, so they cannot pass by skipping.
Build arguments come from the environment as for a user (EDITBENCH_BASE_IMAGE,
EDITBENCH_TORCH_INDEX_URL, PIP_*, proxies); CI sets them from scripts/docker-env.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.compose import Compose, engine_problem, reclaim_build_space
from tests.docker.leftovers import remove_leftovers
from tests.support.servers import free_port

SERVICES = ("editor", "reward")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("EDITBENCH_REQUIRE_DOCKER") == "1":
        pytest.fail(f"EDITBENCH_REQUIRE_DOCKER=1 but {problem}; run scripts/docker-env.sh")
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _docker_tests_need_an_engine(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_engine")


@pytest.fixture(scope="session")
def docker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docker-logs")


@pytest.fixture(scope="session")
def images(docker_engine: None, docker_logs: Path) -> Iterator[dict[str, str]]:
    """The three images, built as the README says (``docker compose --profile cli build``).

    One image at a time (COMPOSE_PARALLEL_LIMIT=1): the later builds reuse the first one's copy
    of the build context, where parallel builds each made their own (with CI's wheelhouse, 3 GB
    each). What builds leave beside the images goes before (a run killed before its teardown
    left it) and after; the layer cache stays, so a rerun builds nothing. First, what killed runs
    left running goes (tests/docker/leftovers.py): it holds images, names and CPU.
    """
    compose = Compose(project="editbench-build", env={"COMPOSE_PARALLEL_LIMIT": "1"})
    removed = remove_leftovers(docker_logs)
    (docker_logs / "leftovers.log").write_text("".join(f"removed {r}\n" for r in removed))
    reclaim_build_space()
    try:
        compose(
            "--progress", "plain", "build", cli=True, timeout=3600, log=docker_logs / "build.log"
        )
        services = compose.config()["services"]
        yield {name: services[name]["image"] for name in (*SERVICES, "orchestrator")}
    finally:
        reclaim_build_space()


@pytest.fixture(scope="module")
def cpu_stack(
    images: dict[str, str], tmp_path_factory: pytest.TempPathFactory, docker_logs: Path
) -> Iterator[Compose]:
    """docker-compose.yml as its own project: free ports on 127.0.0.1, a temporary run folder.

    Taken down with its volume at the end, whatever the tests did to it.
    """
    runs = tmp_path_factory.mktemp("compose") / "runs"  # ./runs of the folder the CLI runs in
    runs.mkdir()
    compose = Compose(
        project=f"editbench-test-{os.getpid()}",
        env={
            "EDITBENCH_EDITOR_PORT": str(free_port()),
            "EDITBENCH_REWARD_PORT": str(free_port()),
            "EDITBENCH_RUNS_DIR": str(runs),
        },
    )
    try:
        yield compose
    finally:
        compose("logs", "--no-color", check=False, log=docker_logs / f"{compose.project}.log")
        compose("down", "--volumes", "--remove-orphans", "--timeout", "180", check=False)


@pytest.fixture
def running_stack(cpu_stack: Compose, docker_logs: Path) -> Compose:
    """The CPU stack, up and healthy (``up -d --wait``; quick when it already is)."""
    cpu_stack("up", "--detach", "--wait", timeout=900, log=docker_logs / "up.log")
    return cpu_stack
