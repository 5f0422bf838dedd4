"""``python -m orchestrator``: the editbench CLI."""

from orchestrator.cli import app

app(prog_name="editbench")
