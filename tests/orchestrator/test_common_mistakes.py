"""A new user's common mistakes end in one paragraph naming what to do, a non-zero exit and no
traceback, with nothing done lost: service URLs that point at the wrong thing (the two swapped,
a port where no editbench service answers, a service not started), and output paths the file
system refuses (an --out that is a file, or lies under one)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from orchestrator.clients import ServiceCallError
from orchestrator.phases import ServiceNotReady
from orchestrator.store import JsonlLog
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices
from tests.orchestrator.harness import cli_env
from tests.orchestrator.test_endpoints import Service
from tests.orchestrator.test_everyday_paths import Notes, run_with, slow_services
from tests.support.servers import REPO_ROOT

__all__ = ["slow_services"]  # the module's real services, shared with test_everyday_paths

# No service is asked: the run folder is refused first.
NOWHERE = ["--editor-url", "http://127.0.0.1:9", "--reward-url", "http://127.0.0.1:9"]
NOT_FOUND_PAGE = (
    "<!DOCTYPE HTML>\n<html lang='en'><head><title>Error response</title></head>\n"
    "<body><h1>Error response</h1><p>Error code: 404</p><p>Message: File not found.</p></body>"
    "</html>\n"
)


def editbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO_ROOT,
        env={**cli_env(), "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_swapped_service_urls_name_the_mix_up_before_the_first_edit(tmp_path: Path) -> None:
    services = FakeServices()
    with pytest.raises(ServiceCallError) as refused:
        run_with(
            services,
            services.transport(),
            tmp_path / "run",
            Notes(),
            editor_url=REWARD,
            reward_url=EDITOR,
        )
    message = str(refused.value)
    assert f"{REWARD} is the reward service, not the editor service" in message
    assert "--editor-url" in message and "swapped" in message
    assert services.count("editor POST /v1/edits") == services.count("reward POST /v1/edits") == 0
    assert JsonlLog(tmp_path / "run" / "edits.jsonl").read() == []


def test_a_url_where_no_editbench_service_answers_stops_at_once_naming_the_flag(
    tmp_path: Path,
) -> None:
    services = FakeServices()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "editor.test":  # another web server on that port
            return httpx.Response(404, text=NOT_FOUND_PAGE, headers={"content-type": "text/html"})
        return await services.handle(request)

    notes = Notes()
    with pytest.raises(ServiceNotReady) as refused:
        run_with(
            services,
            httpx.MockTransport(handle),
            tmp_path / "run",
            notes,
            ready_timeout_s=0,
        )
    message = str(refused.value)
    assert f"the editor at {EDITOR} answers HTTP 404" in message
    assert "check --editor-url" in message and "<" not in message
    assert notes.notes == []  # no "waiting for" line: it stopped at the first answer


def test_status_of_swapped_urls_says_which_service_answers_and_exits_1(
    slow_services: tuple[Service, Service],
) -> None:
    editor, judge = slow_services
    done = editbench("status", "--editor-url", judge.url, "--reward-url", editor.url)
    assert done.returncode == 1, done.stdout
    assert f"{judge.url} is the reward service, not the editor service" in done.stdout
    assert f"{editor.url} is the editor service, not the reward service" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("command", "where"),
    [
        (["run", "--benchmark", "sample", *NOWHERE, "--out", "{file}"], "{file}"),
        (["run", "--benchmark", "sample", *NOWHERE, "--out", "{file}/run"], "{file}/run"),
        (["sample", "{file}/bench"], "{file}/bench"),
    ],
    ids=["run-out-is-a-file", "run-out-under-a-file", "sample-under-a-file"],
)
def test_an_output_path_the_file_system_refuses_is_one_paragraph_not_a_traceback(
    tmp_path: Path, command: list[str], where: str
) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n", encoding="utf-8")
    done = editbench(*[part.format(file=taken) for part in command])
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    error = " ".join(done.stderr.split())
    assert error.startswith(f"error: {where.format(file=taken)}"), error
    assert "a file is where a folder is needed" in error
    assert "run the same command again" in error
    assert taken.read_text(encoding="utf-8") == "mine\n"  # the file in the way is untouched


def nobody_listening() -> str:
    with socket.socket() as sock:  # a free port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("command", "service"),
    [
        (["edit", "{image}", "make it red", "-o", "{out}/edited.png", "--editor-url"], "editor"),
        (["score", "{image}", "{image}", "make it red", "--reward-url"], "reward"),
        (["run", "--benchmark", "sample", "--out", "{out}/run", "--ready-timeout-s", "0",
          "--reward-url", "http://127.0.0.1:9", "--editor-url"], "editor"),
    ],
    ids=["edit", "score", "run"],
)  # fmt: skip
def test_a_service_that_is_not_running_is_named_with_how_to_start_it(
    tmp_path: Path, command: list[str], service: str
) -> None:
    image = tmp_path / "source.png"
    Image.new("RGB", (32, 32), "white").save(image)
    url = nobody_listening()
    done = editbench(*[part.format(image=image, out=tmp_path) for part in command], url)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    error = " ".join(done.stderr.split())
    assert f"Is the {service} service running there?" in error, error
    assert f"`python -m {service}_service`" in error and f"--{service}-url" in error
    assert not (tmp_path / "edited.png").exists() and not (tmp_path / "run").exists()


def test_a_route_the_url_does_not_have_names_the_flag(
    slow_services: tuple[Service, Service], tmp_path: Path
) -> None:
    _, judge = slow_services
    image = tmp_path / "source.png"
    Image.new("RGB", (32, 32), "white").save(image)
    done = editbench("edit", str(image), "make it red", "-o", str(tmp_path / "e.png"),
                     "--editor-url", judge.url)  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "No editbench editor service answers at that URL: check --editor-url" in done.stderr


def test_a_benchmark_that_is_not_there_says_what_benchmark_takes(tmp_path: Path) -> None:
    done = editbench("run", "--benchmark", "smaple", *NOWHERE, "--out", str(tmp_path / "run"))
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    error = " ".join(done.stderr.split())
    assert "benchmark not found:" in error and "smaple" in error
    assert "--benchmark takes a manifest" in error and "'sample'" in error
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder
