"""The run folder: durable, append-only records and atomically written files.

Layout (paths in records are relative to the run folder, so it can be moved or shared)::

    run.json          settings that define the run's jobs (a rerun must agree with them)
    plan.jsonl        the selected items of the latest invocation (metadata, no images)
    edits.jsonl       one line per finished edit job, appended + fsynced as it arrives
    scores.jsonl      one line per finished score job, likewise
    rescores.jsonl    score jobs of other judges or protocols (``editbench rescore``), likewise
    edits/<id>.png    edited images, written atomically (temp file + os.replace)
    thumbs/           small JPEGs for report.html
    results.jsonl     one row per item, edits and scores joined (rewritten by each report)
    results.csv, summary.json, report.html, provenance.json

A crash can leave at most a torn last line in a log: the reader ignores it and the writer cuts it
off before appending, so the next record starts on a line of its own. Records are typed
(`orchestrator.records`): a line that is not a valid record (damaged, or edited by hand) is left
out with a warning that names its file and line, and counted, never a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from pydantic import ValidationError

from orchestrator.benchmarks import BenchmarkError, item_relpath
from orchestrator.benchmarks.base import legacy_item_relpath
from orchestrator.provenance import PROVENANCE_SCHEMA, Provenance
from orchestrator.records import (
    EditRecord,
    JobRecord,
    PlanRow,
    RecordModel,
    RunFile,
    ScoreRecord,
    Summary,
)

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
M = TypeVar("M", bound=RecordModel)
J = TypeVar("J", bound=JobRecord)


class RunFolderBusy(RuntimeError):
    """Another editbench process holds this run folder."""


class DamagedRunFile(BenchmarkError):
    """A file of the run folder that the run cannot go on without does not parse."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(folder: Path, name: str) -> tuple[int, str]:
    """A new temp file beside ``name``, created with mode 0666 so the kernel applies the user's
    umask (and a folder's default ACL) as to any other file; mkstemp's 0600 would leave the run
    folder's files unreadable to a team sharing it."""
    for _ in range(100):
        tmp = str(folder / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name beside {folder / name}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so ``path`` holds either its old content or all of the new, never half.
    The file's mode follows the umask, as a plain ``open`` would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps(record: JsonObject) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_jsonl_atomic(path: Path, records: Iterable[RecordModel]) -> None:
    atomic_write_text(
        path, "".join(dumps(r.model_dump(mode="json", by_alias=True)) + "\n" for r in records)
    )


class JsonlLog:
    """An append-only JSON Lines file: each append is one fsynced write of one whole line.

    The file is opened with O_APPEND and a record goes down in one ``os.write``: it is in the file
    whole or not at all, unless the write itself is cut short (a full disk, a power cut, a kill
    landing mid-copy). Such a torn line is skipped by the reader and cut off by the writer before
    its next append, in this process or the next.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.skipped = 0  # lines the last read left out

    def read(self) -> list[JsonObject]:
        """Every complete JSON object line. A torn last line (a crash mid-write) is skipped with a
        warning."""
        return [record for _, record in self.numbered()]

    def numbered(self) -> Iterator[tuple[int, JsonObject]]:
        """(line number, object) of every line that holds a JSON object; others are skipped
        with a warning naming the file and line, and counted in `skipped` (a torn last line,
        what a crash leaves, is not counted: the writer cuts it off)."""
        self.skipped = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                torn = number == len(lines)  # no newline after it: the write never finished
                self.skipped += 0 if torn else 1
                logger.warning(
                    "%s:%d: skipping %s line (%d bytes)",
                    self.path,
                    number,
                    "a torn last" if torn else "an unreadable",
                    len(line),
                )
                continue
            if isinstance(record, dict):
                yield number, record
            else:
                self.skipped += 1
                logger.warning(
                    "%s:%d: skipping a line that is not a JSON object", self.path, number
                )

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_symlink():  # never repaired, cut or appended through a link
                raise UnsafeRunPath(
                    f"{self.path} is a symbolic link; editbench does not append through links "
                    "inside a run folder"
                )
            self._repair_tail()
            self._fd = os.open(
                self.path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o666,
            )
        return self._fd

    def _repair_tail(self) -> None:
        """Make the file end with a newline: cut a torn last line off, or end a whole one.

        A last line without its newline that still parses is a whole record (the reader counts
        it), so it is kept; anything else after the last newline is what a crash left.
        """
        try:
            with self.path.open("rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return
                handle.seek(size - 1)
                if handle.read(1) == b"\n":
                    return
                # Find the last newline; everything after it is the unfinished last line.
                keep = size
                while keep > 0:
                    step = min(65536, keep)
                    handle.seek(keep - step)
                    chunk = handle.read(step)
                    index = chunk.rfind(b"\n")
                    if index >= 0:
                        keep = keep - step + index + 1
                        break
                    keep -= step
                handle.seek(keep)
                if _is_record(handle.read()):
                    logger.warning("%s: ending a last record that had no newline", self.path)
                    handle.write(b"\n")
                else:
                    logger.warning(
                        "%s: cutting a torn last line (%d bytes)", self.path, size - keep
                    )
                    handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            return

    def append(self, record: JsonObject) -> None:
        line = (dumps(record) + "\n").encode("utf-8")
        with self._lock:
            fd = self._open()
            try:
                written = os.write(fd, line)
                while written < len(line):  # short write (disk full, size limit): go on
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except BaseException:
                # Part of the line may be in the file: reopen before the next append, which
                # cuts it off, so no later record is glued onto it.
                self._close_fd()
                raise

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._close_fd()


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


class RecordLog(Generic[M]):
    """A JSON Lines log of one record type: appends models, reads back validated models.

    A line that is not a valid ``model`` (damaged, or edited by hand) is left out with a warning
    that names the file, the line and what is wrong; `skipped` counts them for the report.
    """

    def __init__(self, path: Path, model: type[M]) -> None:
        self.path = path
        self.model = model
        self.lines = JsonlLog(path)
        self.skipped = 0

    def read(self) -> list[M]:
        records: list[M] = []
        skipped = 0
        for number, raw in self.lines.numbered():
            try:
                records.append(self.model.model_validate(raw))
            except ValidationError as exc:
                skipped += 1
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                logger.warning(
                    "%s:%d: leaving out a line that is not a valid %s (%s: %s)",
                    self.path,
                    number,
                    self.model.__name__,
                    where,
                    first["msg"],
                )
        self.skipped = skipped + self.lines.skipped
        return records

    def append(self, record: M) -> None:
        self.lines.append(record.model_dump(mode="json", by_alias=True))

    def close(self) -> None:
        self.lines.close()


class UnsafeRunPath(BenchmarkError):
    """A path of the run folder that goes through a symbolic link (or is not a plain file):
    editbench neither writes nor reads through links inside a run folder, which others may
    share and change."""


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts_of(relpath: str) -> list[str]:
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or relpath.startswith("/"):
        raise UnsafeRunPath(f"{relpath!r} is not a path inside the run folder")
    return parts


def _open_dirs(root: Path, folders: list[str], *, create: bool) -> int:
    """A descriptor of ``root/folders...``, each folder opened without following a link (and
    made when ``create``); UnsafeRunPath where one is a link or not a folder."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, name in enumerate(folders):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
            try:
                child = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                where = "/".join(folders[: index + 1])
                raise UnsafeRunPath(
                    f"{root / where} is a symbolic link or not a folder; editbench does not "
                    "write or read through links inside a run folder (replace it with a folder)"
                ) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_inside(root: Path, relpath: str, data: bytes) -> None:
    """``atomic_write_bytes`` of ``root/relpath`` where no folder on the way may be a link:
    a link swapped in for ``edits/`` never makes a write land outside the run folder."""
    *folders, name = _parts_of(relpath)
    fd = _open_dirs(root, folders, create=True)
    try:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        out = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o666,
            dir_fd=fd,
        )
        try:
            with os.fdopen(out, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def read_inside(root: Path, relpath: str) -> bytes | None:
    """The bytes of the plain file ``root/relpath``, reached without following any link; None
    where it does not exist; UnsafeRunPath where a link or a non-file is on the way."""
    *folders, name = _parts_of(relpath)
    try:
        fd = _open_dirs(root, folders, create=False)
    except FileNotFoundError:
        return None
    try:
        try:
            file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError:
            raise UnsafeRunPath(
                f"{root / relpath} is a symbolic link; editbench does not read through links "
                "inside a run folder"
            ) from None
        with os.fdopen(file_fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise UnsafeRunPath(f"{root / relpath} is not a plain file")
            return handle.read()
    finally:
        os.close(fd)


def is_file_inside(root: Path, relpath: str) -> bool:
    """``root/relpath`` is a plain file reached without any link (and a path inside)."""
    try:
        parts = _parts_of(relpath)
    except UnsafeRunPath:
        return False
    here = root
    for part in parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return stat.S_ISREG(mode)


def latest_by_job(records: Iterable[J]) -> dict[str, J]:
    """The last record of each job id (later records supersede earlier ones)."""
    return {record.job_id: record for record in records}


def latest_ok_by_item(records: Iterable[J]) -> dict[str, J]:
    """The last successful record of each item id."""
    return {record.item_id: record for record in records if record.ok}


class RunStore:
    """One run folder. Holds an exclusive lock while open, so two runs never interleave writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.edits = RecordLog(root / "edits.jsonl", EditRecord)
        self.scores = RecordLog(root / "scores.jsonl", ScoreRecord)
        self.rescores = RecordLog(root / "rescores.jsonl", ScoreRecord)
        self._lock_handle: IO[bytes] | None = None

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> RunStore:
        self.root.mkdir(parents=True, exist_ok=True)
        handle = (self.root / ".lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunFolderBusy(
                f"{self.root} is in use by another editbench process; wait for it or use "
                "another --out"
            ) from None
        self._lock_handle = handle
        return self

    def close(self) -> None:
        self.edits.close()
        self.scores.close()
        self.rescores.close()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- files ------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "run.json").is_file()

    def read_json(self, name: str, *, damaged_ok: bool = False) -> Any:
        """A JSON file of the folder, or None if absent. A damaged one is a DamagedRunFile naming
        file, line and column; with ``damaged_ok`` a warning, and None (the caller rebuilds it)."""
        path = self.root / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                message = f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})"
            else:
                message = f"{path}: not valid JSON ({type(exc).__name__})"
            if damaged_ok:
                logger.warning("%s; going on without it", message)
                return None
            raise DamagedRunFile(message) from None

    def read_provenance(self) -> Provenance:
        """provenance.json as a `Provenance`: every shape editbench wrote reads; a damaged file
        or part is a warning naming it (and left out), an absent one an empty provenance."""
        return Provenance.read(
            self.read_json("provenance.json", damaged_ok=True), self.root / "provenance.json"
        )

    def read_summary(self) -> Summary | None:
        """summary.json as a `Summary` (None if the run has no report yet): every shape editbench
        wrote reads (one without ``schema`` as schema 0); a damaged file is a DamagedRunFile
        naming the file and the field (``overall.micro.scored: ...``)."""
        return self._read_typed("summary.json", Summary)

    def read_run_file(self) -> RunFile | None:
        """run.json as a `RunFile` (None if absent): every shape editbench wrote reads (one
        without ``schema`` as schema 0); a damaged file is a DamagedRunFile naming the file and
        the field (``selection: ...``) or line and column."""
        return self._read_typed("run.json", RunFile)

    def write_run_file(self, run_file: RunFile) -> None:
        self.write_json("run.json", run_file.dump())

    def _read_typed(self, name: str, model: type[M]) -> M | None:
        data = self.read_json(name)
        if data is None:
            return None
        try:
            return model.model_validate({"schema": 0, **data} if isinstance(data, dict) else data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "the file"
            raise DamagedRunFile(f"{self.root / name}: {where}: {error['msg']}") from None

    def write_provenance(self, provenance: Provenance) -> None:
        self.write_json("provenance.json", {**provenance.dump(), "schema": PROVENANCE_SCHEMA})

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_text(
            self.root / name, json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
        )

    def edit_image_relpath(self, item_id: str, fmt: str) -> str:
        suffix = "jpg" if fmt == "jpeg" else fmt
        return f"edits/{item_relpath(item_id)}.{suffix}"

    def thumb_relpath(self, kind: str, item_id: str) -> str:
        return f"thumbs/{kind}/{item_relpath(item_id)}.jpg"

    def shown_thumb_relpath(self, kind: str, item_id: str) -> str:
        """The thumbnail a report shows: ours, else one a run folder made before file names
        were collision-free (a report of such a folder keeps its pictures)."""
        current = self.thumb_relpath(kind, item_id)
        if not self.has_file(current):
            legacy = f"thumbs/{kind}/{legacy_item_relpath(item_id)}.jpg"
            if self.has_file(legacy):
                return legacy
        return current

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def write_file(self, relpath: str, data: bytes) -> None:
        """Atomically, never through a link inside the run folder (UnsafeRunPath)."""
        write_inside(self.root, relpath, data)

    def read_file(self, relpath: str) -> bytes | None:
        """A file of the folder, never through a link (UnsafeRunPath); None if absent."""
        return read_inside(self.root, relpath)

    def has_file(self, relpath: str) -> bool:
        """A plain file of the folder, reached without a link."""
        return is_file_inside(self.root, relpath)

    def read_plan(self) -> list[PlanRow]:
        return RecordLog(self.root / "plan.jsonl", PlanRow).read()

    def write_plan(self, rows: Iterable[PlanRow]) -> None:
        write_jsonl_atomic(self.root / "plan.jsonl", rows)
