"""Every ``editbench ...`` command the pages show (README.md, orchestrator/README.md, docs/*.md;
code blocks and inline code) is one the CLI accepts: a known command, known options, values of
the right kind. Placeholders (RUN, DIR, SOURCE) are created as the paths they stand for."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import typer.main

from orchestrator.cli import app
from tests.support.servers import REPO_ROOT

PAGES = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "orchestrator" / "README.md",
    *sorted((REPO_ROOT / "docs").glob("*.md")),
]
GROUP = typer.main.get_command(app)
COMMANDS: dict[str, object] = GROUP.commands  # type: ignore[attr-defined]
# `editbench` where a command starts: a line's start, after a path (.venv/bin/), an assignment
# (VAR=x), a container's name (orchestrator), `$ ` or `&& `; not a namespace (`-n editbench`).
AT_COMMAND = re.compile(r"(?:^|[\s/]|\$ )(?<!-n )(?<!--namespace )editbench\s+([a-z][\w-]*.*)$")
PLACEHOLDER = re.compile(r"^(?:\.\.\.|\[\.\.\.\]|\.\.\.\])$")
NOT_FOUND = re.compile(r"(file|dir|path) '([^']+)' does not exist")


def page_commands(text: str) -> list[str]:
    """The argument lists after ``editbench`` in the page's code blocks and inline code."""
    found: list[str] = []
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.lstrip().startswith("#"):
                continue
            if match := AT_COMMAND.search(line):
                found.append(match.group(1))
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if match := re.match(r"(?:\S*/)?editbench\s+([a-z][\w-]*.*)$", span):
            found.append(match.group(1))
    return found


def arguments(command: str) -> list[str]:
    """Shell words up to a comment or the next shell operator; placeholders' brackets off."""
    words = shlex.split(command, comments=True)
    cut = next((i for i, w in enumerate(words) if w in {"|", "&&", ";", ">", "2>&1"}), None)
    return [
        word.removesuffix("...").strip("[]")
        for word in words[:cut]
        if not PLACEHOLDER.match(word) and word.removesuffix("...").strip("[]")
    ]


def parse_error(args: list[str], folder: Path) -> str | None:
    """Why the CLI would refuse ``args`` (None: it parses). A path it wants to exist is made."""
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        return f"no command {name!r} (editbench has: {', '.join(sorted(COMMANDS))})"
    for _ in range(10):  # each round makes one missing placeholder path
        try:
            command.make_context(name, list(rest))  # type: ignore[attr-defined]
        except typer.Exit:
            return None
        except typer.BadParameter as exc:
            if type(exc).__name__ == "MissingParameter":
                return None  # an argument left out in prose ("`editbench compare` writes ...")
            missing = NOT_FOUND.search(exc.format_message())
            if missing is None:
                return exc.format_message()
            path = folder / missing.group(2)
            if missing.group(1) == "file":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
            else:
                path.mkdir(parents=True, exist_ok=True)
        except Exception as exc:  # click's usage errors: no such option, a bad value, ...
            return f"{type(exc).__name__}: {getattr(exc, 'format_message', exc.__str__)()}"
        else:
            return None
    return "made 10 placeholder paths and it still wants more"


def test_the_pages_show_editbench_commands() -> None:
    shown = [command for page in PAGES for command in page_commands(page.read_text("utf-8"))]
    assert len(shown) >= 40
    assert {arguments(command)[0] for command in shown} >= {"run", "status", "report", "compare"}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in PAGES])
def test_every_command_a_page_shows_parses(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    refused = [
        f"editbench {command}\n    -> {why}"
        for command in page_commands(page.read_text("utf-8"))
        if (why := parse_error(arguments(command), tmp_path)) is not None
    ]
    assert refused == [], "\n".join(refused)


@pytest.mark.parametrize(
    ("shown", "refused"),
    [
        ("`editbench run --benchmark sample --stepz 2`", "No such option"),
        ("```bash\neditbench run --steps \\\n  two --out runs/x\n```", "--steps"),
        ("```\n.venv/bin/editbench reprot RUN\n```", "no command 'reprot'"),
        ("`editbench compare RUN_A RUN_B --metrics sc`", "No such option"),
    ],
)
def test_a_command_the_cli_would_refuse_is_found(
    shown: str, refused: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    [command] = page_commands(shown)
    why = parse_error(arguments(command), tmp_path)
    assert why is not None and refused in why, why
