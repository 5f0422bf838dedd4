"""Running ``docker`` and ``docker compose`` from tests: commands, their output on failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU_FILES = ("docker-compose.yml",)
GPU_FILES = ("docker-compose.yml", "docker-compose.gpu.yml")


class CommandFailed(AssertionError):
    pass


def run(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output (the tail of it, or the log's path)."""
    result = subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(args)}\n{result.stdout}\n{result.stderr}", encoding="utf-8")
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        where = f" (full log: {log})" if log else ""
        raise CommandFailed(f"{' '.join(args)} exited {result.returncode}{where}:\n{output}")
    return result


def docker(*args: str, timeout: float = 600, check: bool = True) -> str:
    return run(["docker", *args], timeout=timeout, check=check).stdout


SIZE_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def size_bytes(value: str) -> int:
    """A size as the docker CLI prints it (``3.05GB``, ``6kB``, ``0B``: decimal units), in bytes."""
    number = value.rstrip("kBMGT")
    return round(float(number) * SIZE_UNITS[value[len(number) :]])


def build_context_copies() -> list[int]:
    """Sizes of BuildKit's copies of build contexts (``source.local`` cache records), in bytes."""
    records = json.loads(docker("system", "df", "--verbose", "--format", "{{json .BuildCache}}"))
    return [size_bytes(r["Size"]) for r in records or () if r["CacheType"] == "source.local"]


def reclaim_build_space() -> None:
    """Drop what image builds leave beside the images: this project's dangling images and
    BuildKit's copies of build contexts (gigabytes each with CI's wheelhouse). The layer cache
    stays, so a rebuild builds nothing; scripts/docker-env.sh bounds that cache.
    """
    docker(
        "image", "prune", "--force", "--filter", "label=org.opencontainers.image.vendor=editbench"
    )
    docker("builder", "prune", "--force", "--filter", "type=source.local")


def engine_problem() -> str | None:
    """Why the Docker tests cannot run here, or None when an engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "no docker command"
    if run(["docker", "info"], check=False, timeout=60).returncode != 0:
        return "no Docker engine answers (docker info fails)"
    if run(["docker", "compose", "version"], check=False, timeout=60).returncode != 0:
        return "no Docker Compose v2 (docker compose version fails)"
    return None


@dataclass
class Compose:
    """One compose project: its files, its environment (build arguments, ports, run folder)."""

    project: str
    files: tuple[str, ...] = CPU_FILES
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()  # variables of this process that Compose must not see

    def command(self, *args: str, cli: bool = False) -> list[str]:
        """``docker compose`` for this project; ``cli`` activates the orchestrator's profile."""
        cmd = ["docker", "compose", "--project-name", self.project]
        for name in self.files:
            cmd += ["--file", str(REPO_ROOT / name)]
        if cli:
            cmd += ["--profile", "cli"]
        return [*cmd, *args]

    def __call__(
        self,
        *args: str,
        cli: bool = False,
        timeout: float = 600,
        check: bool = True,
        log: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            self.command(*args, cli=cli),
            env={**{k: v for k, v in os.environ.items() if k not in self.unset}, **self.env},
            timeout=timeout,
            check=check,
            log=log,
        )

    def config(self) -> dict[str, Any]:
        """The resolved configuration (every file merged, every variable substituted)."""
        return dict(json.loads(self("config", "--format", "json", cli=True).stdout))

    def containers(self) -> list[dict[str, Any]]:
        """The project's containers, stopped ones included (``docker compose ps --all``)."""
        out = self("ps", "--all", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):  # older Compose: one JSON array
            return list(json.loads(out))
        return [json.loads(line) for line in out.splitlines()]

    def container_id(self, service: str) -> str:
        return self("ps", "--all", "--quiet", service).stdout.strip()

    def leftovers(self) -> dict[str, list[str]]:
        """Containers and networks of this project that still exist, by kind."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {
            "containers": docker("ps", "--all", "--quiet", "--filter", label).split(),
            "networks": docker("network", "ls", "--quiet", "--filter", label).split(),
        }
        return {kind: ids for kind, ids in found.items() if ids}


def duration_s(value: str) -> float:
    """A duration as ``docker compose config`` prints it (``2m30s``, ``2h0m0s``), in seconds."""
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for char in value:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * units[char]
            number = ""
    return total + (float(number) if number else 0.0)
