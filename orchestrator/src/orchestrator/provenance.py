"""What made a run: software versions, settings, benchmark, services and models, and when.

provenance.json is rewritten (atomically) at the start and end of every invocation; each
invocation is appended to its ``invocations`` list, so a resumed run keeps its whole history.
"""

from __future__ import annotations

import platform
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from orchestrator import __version__

PACKAGES = (
    "editbench-orchestrator",
    "editbench-shared-schemas",
    "httpx",
    "pydantic",
    "tenacity",
    "pillow",
    "pyarrow",
    "typer",
    "rich",
    "jinja2",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def software() -> dict[str, Any]:
    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": package_versions(),
        "argv": sys.argv,
    }
