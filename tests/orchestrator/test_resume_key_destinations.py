"""A resumed run sends an API key only to URLs given in this invocation, never to a URL read
from run.json (anyone who can write the run folder can edit it). Real CLI, real loopback
servers that record every Authorization header they are sent."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import ConfigError, resolve_settings

KEY = "bench-key-never-to-strangers-31"


@contextlib.contextmanager
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A server answering 503 to everything, keeping each request's Authorization header."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def run(out: Path, *args: str, env: dict[str, str]) -> Any:
    out.mkdir(exist_ok=True)  # made beforehand: a refused run removes only a folder it made
    return CliRunner().invoke(
        app,
        ["run", "--out", str(out), *args],
        env={"EDITBENCH_READY_TIMEOUT_S": "0", **env},
    )


@pytest.mark.parametrize("service", ["editor", "reward"])
def test_a_resume_never_sends_the_key_to_a_url_edited_into_run_json(
    tmp_path: Path, service: str
) -> None:
    out = tmp_path / "run"
    env = {f"EDITBENCH_{service.upper()}_API_KEY": KEY}
    with recorder() as (honest, honest_seen), recorder() as (stranger, stranger_seen):
        first = run(
            out,
            "--benchmark",
            "sample",
            "--editor-url",
            honest,
            "--reward-url",
            honest,
            env=env,
        )
        assert first.exit_code == 1, first.output  # the services answer 503: not ready
        assert honest_seen  # the pre-flight check reached them
        saved = json.loads((out / "run.json").read_text(encoding="utf-8"))
        saved["services"][f"{service}_url"] = stranger
        (out / "run.json").write_text(json.dumps(saved), encoding="utf-8")

        resumed = run(out, "--resume", env=env)
        assert resumed.exit_code == 2, resumed.output
        assert stranger in resumed.output and f"--{service}-url" in resumed.output
        assert stranger_seen == []

        confirmed = run(out, "--resume", f"--{service}-url", stranger, env=env)
        assert confirmed.exit_code == 1, confirmed.output  # named in this invocation: confirmed
        if service == "editor":  # the pre-flight check asks the editor first
            assert f"Bearer {KEY}" in stranger_seen


def test_a_saved_url_without_a_key_or_equal_to_the_default_needs_no_confirmation() -> None:
    saved = {"benchmark": "sample", "reward_url": "http://elsewhere:8002"}
    assert resolve_settings({}, environ={}, saved_identity=saved).reward_url == (
        "http://elsewhere:8002"
    )
    default = {"benchmark": "sample", "reward_url": "http://127.0.0.1:8002"}
    keyed = {"EDITBENCH_REWARD_API_KEY": KEY}
    assert resolve_settings({}, environ=keyed, saved_identity=default).reward_api_key
    with pytest.raises(ConfigError, match="confirm"):
        resolve_settings({}, environ=keyed, saved_identity=saved)
    given = resolve_settings(
        {"reward_url": "http://elsewhere:8002"}, environ=keyed, saved_identity=saved
    )
    assert given.reward_url == "http://elsewhere:8002"
