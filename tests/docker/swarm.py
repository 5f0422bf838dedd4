"""Docker Swarm from tests: a single-node swarm made (and unmade) as needed, a stack, its tasks."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.docker.compose import REPO_ROOT, docker, run

STACK_FILE = REPO_ROOT / "docker-stack.yml"


def swarm_state() -> str:
    """``inactive``, ``active``, ``pending``... as ``docker info`` says."""
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def this_node() -> str:
    """This engine's node id in its swarm (``node update`` does not take ``self``)."""
    return docker("info", "--format", "{{.Swarm.NodeID}}").strip()


@contextmanager
def single_node_swarm() -> Iterator[None]:
    """A swarm on this engine for the duration; left as found (left only if made here)."""
    made = swarm_state() == "inactive"
    if made:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
        # Marked as this run's: a later run removes it if this one is killed before leaving.
        docker("node", "update", "--label-add", f"editbench.test-pid={os.getpid()}", this_node())
    try:
        yield
    finally:
        if made:
            docker("swarm", "leave", "--force", timeout=120, check=False)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f} s")
        time.sleep(1.0)


@dataclass
class Stack:
    """One ``docker stack deploy`` of docker-stack.yml under its own name."""

    name: str
    env: dict[str, str] = field(default_factory=dict)

    def deploy(self, log: Path) -> None:
        run(
            ["docker", "stack", "deploy", "--compose-file", str(STACK_FILE), self.name],
            env={**os.environ, **self.env},
            timeout=300,
            log=log,
        )

    def containers(self, service: str) -> list[str]:
        """Running containers of ``service`` (``editor``), by id."""
        label = f"label=com.docker.swarm.service.name={self.name}_{service}"
        return docker("ps", "--quiet", "--filter", label, "--filter", "status=running").split()

    def healthy(self, service: str) -> list[str]:
        label = f"label=com.docker.swarm.service.name={self.name}_{service}"
        return docker("ps", "--quiet", "--filter", label, "--filter", "health=healthy").split()

    def fetch(self, container: str, port: int, path: str, key: str | None = None) -> str:
        """GET a route of one replica from inside its own container (its own answer)."""
        headers = f"{{'Authorization': 'Bearer {key}'}}" if key else "{}"
        code = (
            "import urllib.request as r, sys\n"
            f"q = r.Request('http://127.0.0.1:{port}{path}', headers={headers})\n"
            "try:\n"
            "    a = r.build_opener(r.ProxyHandler({})).open(q, timeout=10)\n"
            "    sys.stdout.write(str(a.status) + '\\n' + a.read().decode())\n"
            "except r.HTTPError as e:\n"
            "    sys.stdout.write(str(e.code) + '\\n' + e.read().decode())\n"
        )
        return docker("exec", container, "python", "-c", code, timeout=60)

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.stack.namespace={self.name}"
        found = {
            "services": docker("service", "ls", "--quiet", "--filter", label).split(),
            "containers": docker("ps", "--all", "--quiet", "--filter", label).split(),
            "networks": docker("network", "ls", "--quiet", "--filter", label).split(),
            "secrets": docker("secret", "ls", "--quiet", "--filter", label).split(),
            "volumes": docker("volume", "ls", "--quiet", "--filter", label).split(),
        }
        return {kind: ids for kind, ids in found.items() if ids}

    def remove(self, log_dir: Path) -> None:
        """Logs kept, then ``docker stack rm``, then its volume once its containers are gone."""
        for service in ("editor", "reward"):
            out = run(
                ["docker", "service", "logs", "--no-task-ids", f"{self.name}_{service}"],
                check=False,
                timeout=120,
            )
            (log_dir / f"{self.name}-{service}.log").write_text(out.stdout + out.stderr)
        docker("stack", "rm", self.name, timeout=300, check=False)
        label = f"label=com.docker.stack.namespace={self.name}"

        def gone() -> bool:
            return not (
                docker("ps", "--all", "--quiet", "--filter", label).split()
                or docker("network", "ls", "--quiet", "--filter", label).split()
            )

        wait_until(gone, "removal of the stack's containers and network", 300)
        for volume in docker("volume", "ls", "--quiet", "--filter", label).split():
            docker("volume", "rm", volume, check=False)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        raw, value = line.rsplit(" ", 1)
        found = dict(
            part.split("=", 1) for part in raw[len(name) + 1 : -1].split(",") if "=" in part
        )
        if all(found.get(k) == json.dumps(v) for k, v in labels.items()):
            total += float(value)
    return total
