"""The run folder's durability: torn lines, atomic files, one writer at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.records import EditRecord
from orchestrator.store import (
    JsonlLog,
    RunFolderBusy,
    RunStore,
    atomic_write_bytes,
    latest_by_job,
)


def test_reader_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "edits.jsonl"
    path.write_bytes(b'{"job_id": "a", "status": "ok"}\n{"job_id": "b", "sta')
    assert JsonlLog(path).read() == [{"job_id": "a", "status": "ok"}]


def test_append_after_a_crash_starts_on_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "edits.jsonl"
    path.write_bytes(b'{"job_id": "a"}\n{"job_id": "b", "sta')
    log = JsonlLog(path)
    log.append({"job_id": "b", "status": "ok"})
    log.close()
    assert path.read_bytes() == b'{"job_id": "a"}\n{"job_id":"b","status":"ok"}\n'
    assert [r["job_id"] for r in JsonlLog(path).read()] == ["a", "b"]


def test_each_append_is_one_write_of_a_whole_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write(2) per record, even one larger than any buffer: a kill cannot split it."""
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    log = JsonlLog(tmp_path / "scores.jsonl")
    big = {"job_id": "big", "detail": "x" * 200_000}
    log.append({"job_id": "small"})
    log.append(big)
    log.close()
    assert len(writes) == 2
    assert all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    assert json.loads(writes[1]) == big


def test_a_failed_append_leaves_nothing_glued_to_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops half-way (disk full) and raises: the next append cuts the torn part."""
    path = tmp_path / "edits.jsonl"
    log = JsonlLog(path)
    log.append({"job_id": "a"})
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        if len(data) > 20:
            return real_write(fd, data[:20])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):  # the injected failure
        log.append({"job_id": "b", "status": "ok", "pad": "y" * 40})
    monkeypatch.setattr(os, "write", real_write)
    assert not path.read_bytes().endswith(b"\n")  # what the failed write left
    log.append({"job_id": "c"})
    log.close()
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == ["a", "c"]


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    """The reader counts it as done, so the writer must not cut it off."""
    path = tmp_path / "edits.jsonl"
    path.write_bytes(b'{"job_id": "a"}\n{"job_id": "b"}')
    assert [r["job_id"] for r in JsonlLog(path).read()] == ["a", "b"]
    log = JsonlLog(path)
    log.append({"job_id": "c"})
    log.close()
    assert [r["job_id"] for r in JsonlLog(path).read()] == ["a", "b", "c"]
    assert all(json.loads(line) for line in path.read_bytes().splitlines())


def test_appends_keep_unicode_and_every_line_parses(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "scores.jsonl")
    for index in range(50):
        log.append({"job_id": str(index), "category": "物理"})
    log.close()
    records = JsonlLog(tmp_path / "scores.jsonl").read()
    assert len(records) == 50
    assert "物理" in (tmp_path / "scores.jsonl").read_text(encoding="utf-8")


def _edit(status: str) -> EditRecord:
    outcome: dict[str, object] = (
        {"image": "edits/x.png", "image_sha256": "e"}
        if status == "ok"
        else {"error": {"type": "timeout", "message": "slow"}}
    )
    return EditRecord.model_validate(
        {
            "job_id": "a",
            "item_id": "x",
            "category": "c",
            "instruction": "i",
            "source_sha256": "s",
            "params": {"steps": 1, "cfg": 1.0, "negative_prompt": " ", "seed_policy": "fixed"},
            "status": status,
            **outcome,
        }
    )


def test_latest_record_per_job_wins() -> None:
    assert latest_by_job([_edit("failed"), _edit("ok")])["a"].status == "ok"


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "edits" / "x.png"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["x.png"]


def test_a_run_folder_has_one_writer_at_a_time(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run"), pytest.raises(RunFolderBusy, match="in use by another"):
        RunStore(tmp_path / "run").open()
    with RunStore(tmp_path / "run"):  # released on exit
        pass


def test_unsafe_item_ids_stay_inside_the_run_folder(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for item_id in ("../../etc/passwd", "/abs/path", "a/../../b", ".hidden", "物理/1"):
        path = (tmp_path / store.edit_image_relpath(item_id, "png")).resolve()
        assert path.is_relative_to(tmp_path.resolve())
    assert store.edit_image_relpath("物理-1", "png") == "edits/物理-1.png"
    assert store.edit_image_relpath("a b", "png") != store.edit_image_relpath("a_b", "png")
