"""``editbench --help`` as people expect it, read from the real command (a process): no Python
value types after flags, values and arguments by name, help text for every option and argument,
``--version``."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import typer.main

from orchestrator import __version__
from orchestrator.cli import app
from tests.orchestrator.harness import cli_env
from tests.support.servers import REPO_ROOT

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def editbench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(), "COLUMNS": "160", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version_flag_prints_the_version() -> None:
    done = editbench("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"editbench {__version__}"


def test_help_shows_no_python_types_after_options_and_names_arguments() -> None:
    assert {"run", "edit", "score", "status", "compare", "report"} <= set(COMMANDS)
    for command in COMMANDS:
        done = editbench(command, "--help")
        assert done.returncode == 0, done.stderr
        text = done.stdout
        assert f"Usage: editbench {command}" in text
        assert "<bool>" not in text and "<int>" not in text and "<float>" not in text, command
        options = [line for line in text.splitlines() if re.match(r"^\W*--", line)]
        assert options, command
    run = editbench("run", "--help").stdout
    assert re.search(r"--resume\s+Continue the run", run)  # a flag: nothing between
    assert re.search(r"--editor-url\s+URL\s", run)
    assert re.search(r"--limit\s+N\s", run)
    assert re.search(r"--request-timeout-s\s+SECONDS\s", run)
    score = editbench("score", "--help").stdout
    assert "SOURCE" in score and "EDITED" in score and "INSTRUCTION" in score


def test_every_option_and_argument_has_help_text() -> None:
    group = typer.main.get_command(app)
    ctx = click.Context(group)  # type: ignore[arg-type]
    missing = [
        f"{name} {param.name}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for param in command.get_params(ctx)
        if not getattr(param, "help", None)
    ]
    assert missing == []
    # A help text says what the option does; a default alone in parentheses does not.
    unexplained = [
        f"{name} {param.name}: {param.help!r}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for param in command.get_params(ctx)
        if (param.help or "").lstrip().startswith("(")
    ]
    assert unexplained == []
