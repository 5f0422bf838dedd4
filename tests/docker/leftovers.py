"""What a killed Docker test run left on the engine, found and removed by the next run.

Every Docker test names what it creates after its own process: ``editbench-test-<pid>`` compose
projects, ``ebswarm<pid>`` stacks, containers labelled ``editbench.test-pid=<pid>``, and a swarm
it made is a node labelled the same. A run killed before its teardown (a CI timeout, a second
Ctrl-C) leaves them running: they hold CPU, memory, images (so nothing can prune them) and names
the next run needs. What belongs to a process that no longer exists goes; what belongs to a live
one (another suite on the same engine) and everything not named this way stays.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.docker.compose import docker, run
from tests.docker.swarm import Stack, swarm_state

TEST_PID_LABEL = "editbench.test-pid"
PROJECT = re.compile(r"editbench-test-(\d+)")
STACK = re.compile(r"ebswarm(\d+)")
# Made by DEPLOY.md's one-off task in test_swarm; removed only with a swarm a test made.
ONE_OFF_VOLUMES = ("editbench-runs",)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _dead(name: str, pattern: re.Pattern[str]) -> bool:
    found = pattern.fullmatch(name)
    return found is not None and not alive(int(found.group(1)))


def swarm_made_by_a_dead_run() -> bool:
    """This engine's swarm was made by a test run (its node labelled) that no longer exists."""
    if swarm_state() != "active":
        return False
    pid = docker(
        "node", "inspect", "self", "--format", f'{{{{index .Spec.Labels "{TEST_PID_LABEL}"}}}}'
    ).strip()
    return pid.isdigit() and not alive(int(pid))


def remove_leftovers(log_dir: Path) -> list[str]:
    """Remove what dead test runs left; returns what was removed (``kind name``)."""
    removed: list[str] = []
    label = '{{.Label "%s"}}'
    containers = docker("ps", "--all", "--format", label % TEST_PID_LABEL).split()
    for pid in sorted({p for p in containers if p.isdigit() and not alive(int(p))}):
        ids = docker("ps", "--all", "--quiet", "--filter", f"label={TEST_PID_LABEL}={pid}").split()
        docker("rm", "--force", *ids, check=False)
        removed += [f"container {i}" for i in ids]
    projects = docker("ps", "--all", "--format", label % "com.docker.compose.project").split()
    for project in sorted({p for p in projects if _dead(p, PROJECT)}):
        run(
            ["docker", "compose", "--project-name", project, "down", "--volumes"],
            timeout=300,
            check=False,
        )
        removed.append(f"compose project {project}")
    if swarm_made_by_a_dead_run():
        # Everything in it was a test's: leaving takes its services, secrets and networks.
        stacks = docker("stack", "ls", "--format", "{{.Name}}").split()
        docker("swarm", "leave", "--force", timeout=120)
        removed.append("swarm (made by a test run)")
        volumes = [f"{s}_models" for s in stacks if _dead(s, STACK)] + list(ONE_OFF_VOLUMES)
        for volume in volumes:
            if docker("volume", "rm", volume, check=False).strip():
                removed.append(f"volume {volume}")
    elif swarm_state() == "active":
        for name in docker("stack", "ls", "--format", "{{.Name}}").split():
            if _dead(name, STACK):
                Stack(name).remove(log_dir)
                removed.append(f"stack {name}")
    return removed
