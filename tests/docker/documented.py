"""docs/DEPLOY.md's commands, taken from the page itself, so a test runs what a reader runs.

A ``bash`` block is found by a line it holds; continuation lines are joined, so one command of
a block (``docker service create ...``) can be picked out. The text is run by ``bash -euo
pipefail`` with the environment and folder the test gives; nothing in it is rewritten except by
an explicit `Renames` (a test's own stack name in place of ``editbench``, so a user's stack of
that name on the same engine is never touched).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.docker.compose import REPO_ROOT, CommandFailed

DEPLOY = REPO_ROOT / "docs" / "DEPLOY.md"
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def bash_block(holding: str, page: Path = DEPLOY) -> str:
    """The one ``bash`` block of ``page`` that holds ``holding``."""
    found = [b for b in _BLOCK.findall(page.read_text(encoding="utf-8")) if holding in b]
    assert len(found) == 1, f"{len(found)} bash blocks of {page} hold {holding!r}"
    return str(found[0])


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined, comment lines left out."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def command(block: str, starting: str) -> str:
    """The one command of ``block`` that starts with ``starting``."""
    found = [c for c in commands(block) if c.startswith(starting)]
    assert len(found) == 1, f"{len(found)} commands start with {starting!r}"
    return found[0]


@dataclass(frozen=True)
class Renames:
    """The stack's name in the page (``editbench``) replaced by a test's own, and only that: in
    stack-scoped names (``editbench_editbench``, ``editbench_models``, the secrets), in ``docker
    stack rm editbench`` and in the stack's label filter."""

    stack: str

    def __call__(self, text: str) -> str:
        text = re.sub(r"\beditbench_(?=\w)", f"{self.stack}_", text)
        text = re.sub(r"(docker stack rm) editbench\b", rf"\1 {self.stack}", text)
        text = text.replace("stack.namespace=editbench)", f"stack.namespace={self.stack})")
        return text


def run_bash(
    text: str, *, cwd: Path, env: Mapping[str, str], timeout: float = 600, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``text`` run by bash (-euo pipefail) in ``cwd``; CommandFailed with its output if not 0."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if log is not None:
        log.write_text(f"$ {text}\n{result.stdout}\n{result.stderr}", encoding="utf-8")
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise CommandFailed(f"bash exited {result.returncode} running:\n{text}\n{output}")
    return result
