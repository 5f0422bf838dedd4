"""The commands the pages show are the ones the Docker tests run: read as files, no engine."""

from __future__ import annotations

from tests.docker.compose import REPO_ROOT
from tests.docker.documented import Renames, bash_block, command, commands

COMPOSE_RUN = "mkdir -p runs && docker compose run"


def test_the_readmes_compose_run_is_the_one_test_compose_cpu_runs_from_deploy_md() -> None:
    readme = command(bash_block(COMPOSE_RUN, REPO_ROOT / "README.md"), COMPOSE_RUN)
    deploy = command(bash_block("docker compose run --rm"), COMPOSE_RUN)
    assert readme == deploy
    assert '-e EDITBENCH_PATH_MAP="/workspace/runs=$PWD/runs"' in deploy


def test_renaming_touches_the_stack_and_nothing_else() -> None:
    clean_up = bash_block("docker service rm editbench-run")
    renamed = Renames("ebswarm7")(clean_up)
    assert "docker stack rm ebswarm7 " in renamed
    assert "label=com.docker.stack.namespace=ebswarm7)" in renamed
    assert "docker volume rm ebswarm7_models " in renamed
    # The one-off task's own names are not the stack's: they stay as the page writes them.
    for name in ("docker service rm editbench-run", "docker volume rm editbench-runs"):
        assert name in renamed
    assert len(commands(renamed)) == len(commands(clean_up)) == 7
    assert [c.split()[0] for c in commands(renamed)] == [c.split()[0] for c in commands(clean_up)]
