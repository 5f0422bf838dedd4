"""Print the third-party requirements of an editbench component, one per line, for ``pip -r``.

The Dockerfiles install a service's pinned dependencies in a layer of their own, before its code,
so a code change does not reinstall them. This reads ROOT/COMPONENT/pyproject.toml, follows its
editbench-* dependencies (with their extras) into the other ROOT/*/pyproject.toml files, and
prints every other requirement as written there: the service's exact pins and the shared
libraries' ranges, which pip resolves together.

    python docker/requirements.py . editor_service > requirements.txt

Standard library only: it runs on the bare base image, before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split(requirement: str) -> tuple[str, set[str]]:
    """A requirement's normalized project name and its extras."""
    match = NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    extras = {normalize(e) for e in (match.group(2) or "").split(",") if e.strip()}
    return normalize(match.group(1)), extras


def third_party_requirements(root: Path, component: str) -> list[str]:
    """The requirements of ``root/component`` and of the editbench projects it depends on."""
    projects = {}
    for path in sorted(root.glob("*/pyproject.toml")):
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        projects[normalize(project["name"])] = project
    start = tomllib.loads((root / component / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(normalize(start["project"]["name"]), frozenset())]
    while pending:
        name, extras = pending.pop(0)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        project = projects[name]
        optional = project.get("optional-dependencies", {})
        requirements = list(project.get("dependencies", []))
        for extra in sorted(extras):
            requirements += optional.get(extra, [])
        for requirement in requirements:
            dep, dep_extras = split(requirement)
            if dep in projects:
                pending.append((dep, frozenset(dep_extras)))
            elif requirement not in found:
                found.append(requirement)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    sys.stdout.writelines(f"{r}\n" for r in third_party_requirements(Path(argv[0]), argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
