"""The CLI's import boundary: shared_schemas and HTTP only, never a model stack or a service."""

from __future__ import annotations

import subprocess
import sys

from tests.support.servers import REPO_ROOT

FORBIDDEN = (
    "torch",
    "diffusers",
    "transformers",
    "fastapi",
    "editor_service",
    "reward_service",
    "service_kit",
)


def test_importing_the_whole_cli_pulls_in_no_model_stack_or_service() -> None:
    code = (
        "import sys, orchestrator.cli, orchestrator.demo, orchestrator.runner; "
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
