"""The run folder is shared ground (issue 31, class 8): a link put in it never makes editbench
write or read outside it; absurd or case-colliding item ids are per-item matters, never a
traceback or two items in one file; manifest text never controls the terminal."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.benchmarks import item_relpath
from orchestrator.cli import app
from orchestrator.config import resolve_settings
from orchestrator.progress import NullProgress
from orchestrator.retry import RetryPolicy
from orchestrator.runner import RunOutcome, rerender_report, run_benchmark
from orchestrator.store import RunStore, UnsafeRunPath
from orchestrator.terminal import SafeConsole, printable
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices

PRIVATE = b"\x89PNG private bytes of someone else"


def run(benchmark: Path, out: Path) -> RunOutcome:
    settings = resolve_settings(
        {
            "benchmark": str(benchmark),
            "out": out,
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
        },
        environ={},
    )
    return asyncio.run(
        run_benchmark(
            settings,
            NullProgress(),
            transport=FakeServices().transport(),
            policy=RetryPolicy(job_deadline_s=600, probe_interval_s=0.01),
        )
    )


def records(out: Path, name: str = "edits.jsonl") -> list[dict[str, Any]]:
    lines = (out / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_symlink()}


@pytest.mark.parametrize("linked", ["edits", "thumbs", "thumbs/edited"])
def test_a_linked_folder_in_the_run_folder_is_never_written_through(
    tmp_path: Path, linked: str
) -> None:
    benchmark = write_manifest(
        tmp_path / "bench",
        [{"id": f"a-{i}", "category": "c", "instruction": f"edit {i}"} for i in range(3)],
    )
    out = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / linked).parent.mkdir(parents=True, exist_ok=True)
    (out / linked).symlink_to(elsewhere, target_is_directory=True)

    run(benchmark, out)

    assert files_under(elsewhere) == set()
    edits = records(out)
    assert len(edits) == 3
    if linked == "edits":
        assert {e["status"] for e in edits} == {"failed"}
        assert all("symbolic link" in e["error"]["message"] for e in edits)
        assert all(e["error"]["type"] == "run_folder" for e in edits)


def test_a_linked_log_file_is_never_appended_or_cut_through(tmp_path: Path) -> None:
    benchmark = write_manifest(
        tmp_path / "bench", [{"id": "a", "category": "c", "instruction": "x"}]
    )
    out = tmp_path / "run"
    out.mkdir()
    private = tmp_path / "private.log"
    private.write_bytes(b"someone's log without a final newline")
    (out / "edits.jsonl").symlink_to(private)
    with pytest.raises(UnsafeRunPath, match=r"edits\.jsonl is a symbolic link"):
        run(benchmark, out)
    assert private.read_bytes() == b"someone's log without a final newline"


@pytest.mark.parametrize("linked", ["thumbs/source", "edits"])
def test_a_self_contained_report_never_embeds_a_file_a_link_points_at(
    tmp_path: Path, linked: str
) -> None:
    benchmark = write_manifest(
        tmp_path / "bench", [{"id": "a", "category": "c", "instruction": "x"}]
    )
    out = tmp_path / "run"
    run(benchmark, out)
    private = tmp_path / "private.jpg"
    private.write_bytes(PRIVATE)
    # Every image of the kind is swapped for a link to the private file.
    for path in list((out / linked).rglob("*.*")):
        path.unlink()
        path.symlink_to(private)
    for thumb in (out / "thumbs" / "edited").rglob("*.jpg"):
        thumb.unlink()  # the report would make it again from the (linked) edit
    paths, _ = rerender_report(out, self_contained=True)
    page = paths.html.read_text(encoding="utf-8")
    assert base64.b64encode(PRIVATE).decode() not in page
    assert files_under(out / "thumbs" / "edited") == set() or linked != "edits"


def test_an_absurdly_long_id_fails_only_its_item_with_a_clear_error(tmp_path: Path) -> None:
    long_id = "/".join(["seg"] * 2100)
    benchmark = write_manifest(
        tmp_path / "bench",
        [
            {"id": long_id, "category": "c", "instruction": "x"},
            {"id": "short", "category": "c", "instruction": "y"},
        ],
    )
    out = tmp_path / "run"
    outcome = run(benchmark, out)
    assert outcome.report is not None
    by_id = {e["item_id"]: e for e in records(out)}
    assert by_id["short"]["status"] == "ok"
    failed = by_id[long_id]
    assert failed["status"] == "failed" and failed["error"]["type"] == "invalid_input"
    assert "8399 characters long" in failed["error"]["message"]
    assert len(item_relpath(long_id).encode()) < 255


@pytest.mark.parametrize(
    "ids",
    [("Cat", "cat"), ("CAT", "cat", "Cat"), ("Dir/x", "dir/x"), ("straße", "STRASSE", "strasse")],
)
def test_ids_that_differ_only_in_case_never_share_a_file_name_case_folded(
    tmp_path: Path, ids: tuple[str, ...]
) -> None:
    names = [item_relpath(i).casefold() for i in ids]
    assert len(set(names)) == len(ids)
    benchmark = write_manifest(
        tmp_path / "bench",
        [{"id": i, "category": "c", "instruction": f"edit {n}"} for n, i in enumerate(ids)],
    )
    out = tmp_path / "run"
    run(benchmark, out)
    edits = records(out)
    images = [e["image"].casefold() for e in edits]
    assert {e["status"] for e in edits} == {"ok"} and len(set(images)) == len(ids)


HOSTILE = [
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "\x1b[1A\x1b[2Kok",  # rewrite the line above
    "\x1b]8;;http://evil.test\x1b\\click\x1b]8;;\x1b\\",  # hyperlink
    "\x1b]0;title\x07",  # window title
    "\u202eevil",  # right-to-left override
    "[link=http://evil.test]click[/link]",  # rich markup
]


@pytest.mark.parametrize("text", HOSTILE)
def test_manifest_text_never_reaches_the_terminal_as_control(tmp_path: Path, text: str) -> None:
    benchmark = write_manifest(
        tmp_path / "bench",
        [{"id": f"a{text}", "category": f"cat{text}", "instruction": f"do {text}"}],
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--benchmark",
            str(benchmark),
            "--out",
            str(out),
            "--editor-url",
            "http://127.0.0.1:9",
            "--reward-url",
            "http://127.0.0.1:9",
            "--categories",
            f"cat{text}",
            "--limit",
            "1",
        ],
        env={"EDITBENCH_READY_TIMEOUT_S": "0"},
    )
    assert result.exit_code == 1, result.output
    for bad in ("\x1b", "\x07", "\u202e", "\x1b]8"):
        assert bad not in result.output
    # The report of that folder, printed, is clean too.
    shown = CliRunner().invoke(app, ["report", str(out)])
    assert "\x1b" not in shown.output and "\u202e" not in shown.output


def test_the_safe_console_keeps_its_own_styles_and_shows_escapes_visibly() -> None:
    console = SafeConsole(force_terminal=True, color_system="standard", width=200)
    with console.capture() as captured:
        console.print("[red]error:[/] " + printable("x") + "\x1b[2J", highlight=False)
    text = captured.get()
    assert "\\x1b[2J" in text and "\x1b[2J" not in text
    assert "\x1b[31m" in text  # rich's own colour still works
    plain = Console(force_terminal=True, color_system="standard", width=200)
    with plain.capture() as raw:
        plain.print("\x1b[2J", highlight=False)
    assert "\x1b[2J" in raw.get()  # what SafeConsole prevents


def test_writes_through_the_store_refuse_paths_that_climb_out(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.root.mkdir()
    for bad in ("../x.png", "/etc/x", "edits/../../x"):
        with pytest.raises(UnsafeRunPath, match="is not a path inside the run folder"):
            store.write_file(bad, b"x")
    store.write_file("edits/a/b.png", b"ok")
    assert store.read_file("edits/a/b.png") == b"ok" and store.has_file("edits/a/b.png")
    os.symlink(tmp_path, store.root / "edits" / "link")
    with pytest.raises(UnsafeRunPath, match="edits/link is a symbolic link or not a folder"):
        store.write_file("edits/link/c.png", b"x")
    assert not (tmp_path / "c.png").exists()


def test_the_run_log_is_never_written_through_a_link_and_keeps_one_line_per_record(
    tmp_path: Path,
) -> None:
    import logging

    from orchestrator.terminal import LogLineFormatter

    out = tmp_path / "run"
    out.mkdir()
    private = tmp_path / "private.txt"
    private.write_text("someone's file\n")
    (out / "editbench.log").symlink_to(private)
    benchmark = write_manifest(
        tmp_path / "bench", [{"id": "a", "category": "c", "instruction": "x"}]
    )
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--benchmark",
            str(benchmark),
            "--out",
            str(out),
            "--editor-url",
            "http://127.0.0.1:9",
            "--reward-url",
            "http://127.0.0.1:9",
        ],
        env={"EDITBENCH_READY_TIMEOUT_S": "0"},
    )
    assert result.exit_code == 2 and "symbolic link" in result.output
    assert private.read_text() == "someone's file\n"

    forged = "2026-12-06 07:00:00,000 ERROR x: FORGED"
    for value in (f"a\n{forged}", f"a\r{forged}", f"a\u2028{forged}", f"a\x1b[2K{forged}"):
        record = logging.LogRecord(
            "x", logging.WARNING, __file__, 1, "item %r: %s", ("i", value), None
        )
        text = LogLineFormatter("%(levelname)s %(message)s").format(record)
        assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\u2028" not in text
