"""Everyday paths: the printed resume command works as printed, a judge that is down or an unknown
protocol is found before the first edit, a log gets progress lines, --split is an option."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.clients import ServiceCallError
from orchestrator.config import resolve_settings
from orchestrator.phases import ServiceNotReady
from orchestrator.progress import LineProgress
from orchestrator.runner import read_saved_identity, run_benchmark
from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices, error
from tests.orchestrator.harness import answered, cli_env, editbench, finish, wait_for
from tests.orchestrator.test_compare import POLICY, _no_sleep, run_sample
from tests.orchestrator.test_endpoints import Service, started
from tests.support.servers import REPO_ROOT, free_port


class Notes:
    """A progress view that keeps what it was told to say."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        self.notes.append(message)

    def finish(self) -> None:
        pass


def run_with(
    services: FakeServices,
    transport: httpx.AsyncBaseTransport,
    out: Path,
    progress: Notes,
    **changes: Any,
) -> None:
    settings = resolve_settings(
        {
            "benchmark": "sample",
            "out": out,
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
            **changes,
        },
        environ={},
    )
    asyncio.run(
        run_benchmark(settings, progress, transport=transport, policy=POLICY, sleep=_no_sleep)
    )


def judge_ready_after(services: FakeServices, failures: int) -> httpx.MockTransport:
    """The judge's /ready answers 503 (loading) ``failures`` times, then the fakes answer."""
    left = [failures]

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reward.test" and request.url.path == "/ready" and left[0]:
            left[0] -= 1
            return error(503, "not_ready", "loading the judge")
        return await services.handle(request)

    return httpx.MockTransport(handle)


def test_the_run_folder_keeps_the_service_urls_and_no_api_key(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_sample(out, FakeServices(), editor_api_key="sk-editor-secret", reward_api_key="sk-judge")
    saved = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert saved["services"] == {
        "editor_url": EDITOR,
        "reward_url": REWARD,
        "share_gpu": False,
        "allow_mixed_revisions": False,
    }
    read = [
        path
        for path in out.rglob("*")
        if path.is_file() and path.suffix in {".json", ".jsonl", ".html", ".csv", ".log"}
    ]
    assert {"run.json", "results.jsonl", "report.html"} <= {path.name for path in read}
    for path in read:
        text = path.read_text(encoding="utf-8")
        assert "sk-editor-secret" not in text and "sk-judge" not in text, path

    # A resume with no flags gets the saved URLs; a flag given on resume wins.
    resumed = resolve_settings({}, environ={}, saved_identity=read_saved_identity(out))
    assert (resumed.editor_url, resumed.reward_url) == (EDITOR, REWARD)
    moved = resolve_settings(
        {"reward_url": "http://judge2:8002"}, environ={}, saved_identity=read_saved_identity(out)
    )
    assert (moved.editor_url, moved.reward_url) == (EDITOR, "http://judge2:8002")


def test_share_gpu_is_kept_for_a_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (tmp_path / "none").mkdir()
    # Score-only over an empty folder of edits: nothing to score, so no GPU hand-over happens.
    run_sample(
        out, FakeServices(), phase="score", edited_dir=str(tmp_path / "none"), share_gpu=True
    )
    resumed = resolve_settings({}, environ={}, saved_identity=read_saved_identity(out))
    assert resumed.share_gpu is True


def test_a_judge_that_is_down_stops_the_run_before_the_first_edit(tmp_path: Path) -> None:
    services = FakeServices()
    notes = Notes()
    with pytest.raises(ServiceNotReady, match=r"reward at http://reward\.test is not ready"):
        run_with(
            services,
            judge_ready_after(services, 10**6),
            tmp_path / "run",
            notes,
            ready_timeout_s=0,
        )
    assert services.count("editor POST /v1/edits") == 0
    assert JsonlLog(tmp_path / "run" / "edits.jsonl").read() == []
    assert notes.notes == [
        "waiting for the reward at http://reward.test: loading the judge "
        "(0 s of --ready-timeout-s 0)"
    ]


def test_an_unknown_protocol_stops_the_run_before_the_first_edit(tmp_path: Path) -> None:
    services = FakeServices()
    with pytest.raises(ServiceCallError, match=r"unknown judge protocol 'nosuch'.*viescore"):
        run_with(services, services.transport(), tmp_path / "run", Notes(), protocol="nosuch")
    assert services.count("editor POST /v1/edits") == 0


def test_waiting_for_a_service_is_one_line_per_wait_not_per_poll(tmp_path: Path) -> None:
    services = FakeServices()
    notes = Notes()
    run_with(services, judge_ready_after(services, 2), tmp_path / "run", notes)
    waits = [n for n in notes.notes if "reward" in n]
    assert len(waits) == 2, waits  # two polls failed with one reason: one line, then ready
    assert waits[0].startswith("waiting for the reward at http://reward.test: loading the judge")
    assert waits[1].startswith("the reward at http://reward.test is ready (after ")
    assert services.count("reward POST /v1/scores") > 0


def test_a_log_gets_a_progress_line_at_least_every_interval() -> None:
    now = [100.0]
    lines: list[str] = []
    progress = LineProgress(lines.append, interval_s=30, tick_s=None, clock=lambda: now[0])
    progress.start("edit", 10)
    assert lines == ["edit: 10 jobs"]
    progress.advance(skipped=True, count=2)
    now[0] += 29
    progress.tick()
    assert len(lines) == 1  # not yet 30 s
    now[0] += 1
    progress.tick()  # nothing finished, still a line: a stuck run is visible in the log
    assert lines[-1] == (
        "edit: 2/10 done (2 before this run), 0 failed, 0.0/min, ETA -, elapsed 0:00:30"
    )
    now[0] += 30
    progress.advance(ok=True, count=3)
    progress.advance(ok=False)
    assert lines[-1] == (
        "edit: 5/10 done (2 before this run), 0 failed, 3.0/min, ETA 0:01:40, elapsed 0:01:00"
    )
    progress.finish()  # interrupted: not "phase over"
    assert lines[-1].startswith("edit: 6/10 done (2 before this run), 1 failed")
    assert lines[-1].endswith("(stopped, 4 jobs left)")

    progress.start("score", 1)
    assert lines[-1] == "score: 1 job"
    progress.advance()
    progress.finish()
    assert lines[-1].startswith("score: 1/1 done, 0 failed") and lines[-1].endswith("(phase over)")


def test_split_picks_a_datasetdict_split_from_the_command_line(tmp_path: Path) -> None:
    from tests.orchestrator.test_benchmarks import gedit_table

    table, _ = gedit_table(n_per_lang=1)
    for split in ("train", "test"):
        folder = tmp_path / "gedit" / split
        folder.mkdir(parents=True)
        with (
            pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            writer.write_table(table)
    (tmp_path / "gedit" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    shown = CliRunner().invoke(
        app,
        ["run", "-b", str(tmp_path / "gedit"), "--split", "dev", "--out", str(tmp_path / "r")],
    )
    assert shown.exit_code == 1
    assert "no split 'dev'; it has train, test" in shown.output


@pytest.fixture(scope="module")
def slow_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    """A real editor (0.3 s per edit) and judge, fakes at the backend seam, on loopback."""
    folder = tmp_path_factory.mktemp("services")
    with ExitStack() as stack:
        editor = Service("editor_service", folder, "editor", options={"edit_delay_s": 0.3})
        judge = Service("reward_service", folder, "judge")
        started(stack, editor, judge)
        yield editor, judge


def test_the_resume_command_printed_on_ctrl_c_works_as_printed(
    slow_services: tuple[Service, Service], tmp_path: Path
) -> None:
    _, judge = slow_services
    # An editor that answers the first edit and holds every later one until the gate opens: the
    # Ctrl-C comes with one edit done and the rest left, whatever the machine's speed (with a
    # timed editor, 0.3 s an edit, the edits left were the window for the signal).
    gate = tmp_path / "open"
    options = {"edit_gate": str(gate), "edit_gate_after": 1}
    with ExitStack() as stack:
        [editor] = started(stack, Service("editor_service", tmp_path, "held", options=options))
        run_interrupted_then_resumed(editor, judge, tmp_path, gate)


def run_interrupted_then_resumed(
    editor: Service, judge: Service, tmp_path: Path, gate: Path
) -> None:
    out = tmp_path / "run"
    first = editbench(
        "run", "-b", "sample", "--limit", "6", "--steps", "2", "--protocol", "single",
        "--editor-url", editor.url, "--reward-url", judge.url, "--out", str(out),
    )  # fmt: skip
    wait_for(lambda: len(JsonlLog(out / "edits.jsonl").read()) >= 1, "a first edit", first)
    assert len(JsonlLog(out / "edits.jsonl").read()) == 1  # the second is held
    first.send_signal(signal.SIGINT)
    code, _, err = finish(first, 120)
    assert code == 130, err
    # The interrupted phase says it stopped, not that it is over.
    stopped = [line for line in err.splitlines() if line.startswith("edit: ")][-1]
    assert "(phase over)" not in stopped and stopped.endswith("left)"), err
    printed = next(line.strip() for line in err.splitlines() if "--resume" in line)
    argv = shlex.split(printed)
    # The way this test started it (python -m orchestrator), by the same interpreter's path.
    assert argv[:4] == [sys.executable, "-m", "orchestrator", "run"]
    assert argv[4:] == ["--resume", "--out", str(out)]
    gate.touch()

    # Exactly the printed command, as pasted (no URL flags): the run folder knows the services.
    second = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = finish(second, 300)
    assert code == 0, err
    results = JsonlLog(out / "results.jsonl").read()
    assert len(results) == 6 and all(r["scored"] for r in results)
    # Not a terminal: plain progress lines, one per phase start and end at least.
    assert "edit: " in err and "(phase over)" in err
    assert "score: " in err


def test_a_judge_that_is_down_is_reported_before_any_edit_by_the_cli(
    slow_services: tuple[Service, Service], tmp_path: Path
) -> None:
    editor, _ = slow_services
    before = answered(editor.url, "/v1/edits")
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    process = editbench(
        "run", "-b", "sample", "--limit", "2", "--steps", "2", "--ready-timeout-s", "3",
        "--editor-url", editor.url, "--reward-url", nobody, "--out", str(tmp_path / "run"),
    )  # fmt: skip
    code, _, err = finish(process, 120)
    assert code == 1, err
    assert f"waiting for the reward at {nobody}" in err
    assert f"the reward at {nobody} is not ready after 3 s" in err
    assert answered(editor.url, "/v1/edits") == before  # not one edit was sent


@pytest.fixture(scope="module")
def generate_only_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real judge service that offers generate mode only (as an endpoint without logprobs)."""
    folder = tmp_path_factory.mktemp("generate-only")
    with ExitStack() as stack:
        [judge] = started(
            stack, Service("reward_service", folder, "judge", options={"modes": ["generate"]})
        )
        yield judge


def test_a_mode_the_judge_does_not_offer_stops_the_run_before_the_first_edit_and_leaves_no_folder(
    slow_services: tuple[Service, Service], generate_only_judge: Service, tmp_path: Path
) -> None:
    editor, _ = slow_services
    before = answered(editor.url, "/v1/edits")
    out = tmp_path / "run"
    process = editbench(
        "run", "-b", "sample", "--limit", "2", "--steps", "2", "--out", str(out),
        "--editor-url", editor.url, "--reward-url", generate_only_judge.url,
    )  # fmt: skip
    code, _, err = finish(process, 120)
    assert code == 1, err
    assert "cannot read scores in --mode expected" in err and "--mode generate" in err
    assert answered(editor.url, "/v1/edits") == before  # not one edit was sent
    assert not out.exists()  # refused: no empty run folder left behind


def test_a_run_whose_every_score_fails_says_why_and_exits_1(
    slow_services: tuple[Service, Service], tmp_path: Path
) -> None:
    editor, judge = slow_services
    rows = [{"id": f"j{n}", "category": "color", "instruction": f"fake-junk {n}"} for n in range(2)]
    bench = write_manifest(tmp_path / "bench", rows)
    process = editbench(
        "run", "-b", str(bench), "--steps", "2", "--mode", "generate", "--protocol", "single",
        "--editor-url", editor.url, "--reward-url", judge.url, "--out", str(tmp_path / "run"),
    )  # fmt: skip
    code, _, err = finish(process, 300)
    assert code == 1, err
    assert "every score of this run failed (2 of 2)" in err
    assert "the judge said: " in err


def test_resuming_with_another_judge_mode_points_at_rescore(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_with(FakeServices(), FakeServices().transport(), out, Notes())
    refused = CliRunner().invoke(app, ["run", "--resume", "--out", str(out), "--mode", "generate"])
    assert refused.exit_code == 2, refused.output
    assert "mode: the run folder has 'expected', you asked for 'generate'" in refused.output
    # Commands to paste as they are: this run's folder, its judge URL and benchmark.
    output = " ".join(refused.output.split())  # the terminal may wrap long lines
    rescore = f"editbench rescore {out} --reward-url {REWARD} --mode generate"
    assert rescore in output, output
    assert f"--phase score --edited-dir {out}/edits --benchmark sample --mode generate" in output
    assert "RUN_FOLDER" not in output and " URL " not in output


def test_status_shows_each_url_whole_in_a_narrow_terminal(
    slow_services: tuple[Service, Service],
) -> None:
    editor, judge = slow_services
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "--editor-url", editor.url,
         "--reward-url", judge.url],
        cwd=REPO_ROOT, env={**cli_env(), "COLUMNS": "60"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert editor.url in done.stdout and judge.url in done.stdout, done.stdout


def test_a_path_inside_the_cli_container_is_printed_as_the_hosts(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "sample"
    run_with(FakeServices(), FakeServices().transport(), out, Notes())
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", str(out)],
        cwd=REPO_ROOT,
        env={**cli_env(), "EDITBENCH_PATH_MAP": f"{tmp_path / 'runs'}=/home/me/editbench/runs"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "report: /home/me/editbench/runs/sample/report.html" in done.stdout


def test_a_kris_run_judged_with_viescore_is_warned_before_the_first_edit(tmp_path: Path) -> None:
    from tests.orchestrator.published_layouts import write_kris

    class Phases(Notes):
        def start(self, phase: str, total: int) -> None:
            self.notes.append(f"phase {phase}")

    services = FakeServices()
    notes = Phases()
    out = tmp_path / "run"
    run_with(
        services,
        services.transport(),
        out,
        notes,
        benchmark=str(write_kris(tmp_path / "data")),
        protocol="viescore",
        categories=["color_change", "chemistry"],
    )
    [warning] = [n for n in notes.notes if n.startswith("warning: ")]
    assert "judge protocol 'viescore' cannot produce KRIS-Bench's official statistics" in warning
    assert "chemistry" in warning and "--protocol kris (every category in one run)" in warning
    assert notes.notes.index(warning) < notes.notes.index("phase edit")  # before the first edit
    # the run goes on (a warning, not a refusal), and its official tables say the same
    assert services.count("editor POST /v1/edits") > 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert any("--protocol kris" in note for note in summary["official"]["notes"])
