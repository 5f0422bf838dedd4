"""Benchmarks whose files the hub keeps in one archive, read from the archive as it is (a hub
cache is never unpacked; nothing is written next to it).

- RISEBench on the hub (``PhoenixZ/RISEBench``): ``datav2_total_w_subtask.json`` and
  ``data.zip``, whose members are ``data/<category>_images/<n>.png``; the JSON's image paths are
  relative to that ``data/`` folder (gpt_eval.py ``--input data``; readers that unpack it: BAGEL's
  eval/gen/rise README, "data/ ... causal_reasoning_images ...").
- ImgEdit-Bench on the hub (``sysuyy/ImgEdit``, the ImgEdit README's "Benchmark.tar # dataset
  for benchmark"): the suites' JSON files and their image folders in one tar.

Members are found by name: a zip's central directory, a tar's headers read once into an index
(name -> offset and size), so reading one image is one seek however large the archive.
"""

from __future__ import annotations

import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from orchestrator.benchmarks.base import head_problem
from orchestrator.benchmarks.folder import FolderBenchmark, image_paths
from orchestrator.benchmarks.items import BenchmarkError, Item


class Archive:
    """The regular files of one zip or tar archive, read by member name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: dict[str, tuple[int, int]] | None = None
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as opened:
                    self.names = {i.filename for i in opened.infolist() if not i.is_dir()}
            else:
                with tarfile.open(path, "r:") as opened:  # uncompressed: members can be seeked
                    self._tar = {
                        m.name.removeprefix("./"): (m.offset_data, m.size)
                        for m in opened
                        if m.isfile()
                    }
                self.names = set(self._tar)
        except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise BenchmarkError(f"{path}: not a readable zip or tar archive: {exc}") from None

    def read(self, name: str, limit: int | None = None) -> bytes:
        """A member's bytes (its first ``limit`` bytes when given). KeyError: no such member;
        a member the archive cannot give back (a bad CRC, a cut stream) is an OSError."""
        if name not in self.names:
            raise KeyError(name)
        try:
            if self._tar is None:
                with zipfile.ZipFile(self.path) as opened, opened.open(name) as member:
                    return member.read(-1 if limit is None else limit)
            offset, size = self._tar[name]
            with self.path.open("rb") as handle:
                handle.seek(offset)
                return handle.read(size if limit is None else min(size, limit))
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise OSError(f"member {name!r} is damaged ({type(exc).__name__}: {exc})") from None

    def find(self, relpath: str, under: str = "") -> str | None:
        """The folder (``''`` or ``'x/y/'``) holding ``relpath``, among those starting with
        ``under``; the shortest when several do."""
        target = posixpath.normpath(relpath)
        found = [
            name[: -len(target)]
            for name in self.names
            if name.startswith(under) and (name == target or name.endswith("/" + target))
        ]
        return min(found, key=len) if found else None

    def members(self, suffix: str) -> list[str]:
        """Members whose name is ``suffix`` or ends with ``/suffix``, shortest first."""
        return sorted(
            (n for n in self.names if n == suffix or n.endswith("/" + suffix)),
            key=lambda n: (len(n), n),
        )


def member_name(prefix: str, relpath: str) -> str | None:
    """The archive member a relative image path names, or None when it would leave the prefix."""
    name = posixpath.normpath(relpath.replace("\\", "/"))
    if name.startswith(("../", "/")) or name in ("..", "."):
        return None
    return prefix + name


class ArchiveBenchmark(FolderBenchmark):
    """A `FolderBenchmark` whose image files are members of one archive, under ``prefix``."""

    format = "archive"

    def __init__(
        self, path: Path, archive: Archive, prefix: str, items: Sequence[Item], *, name: str
    ) -> None:
        super().__init__(path, archive.path.parent, items, name=name)
        self.archive = archive
        self.prefix = prefix

    def _read(self, item: Item, relpath: str) -> bytes:
        member = member_name(self.prefix, relpath)
        if member is None:
            raise BenchmarkError(f"item {item.id!r}: image path {relpath!r} leaves the archive")
        try:
            return self.archive.read(member)
        except KeyError:
            raise BenchmarkError(
                f"item {item.id!r}: {member!r} is not in {self.archive.path}"
            ) from None
        except OSError as exc:
            raise BenchmarkError(
                f"item {item.id!r}: cannot read {self.archive.path}: {exc}"
            ) from None


def check_members(archive: Archive, prefix: str, items: Iterable[Item]) -> None:
    """Every image an item names is a member of ``archive``; all offenders named together."""
    problems: list[str] = []
    for item in items:
        for relpath in image_paths(item):
            member = member_name(prefix, relpath)
            if member is None:
                problems.append(f"item {item.id!r}: image path {relpath!r} leaves the archive")
            elif member not in archive.names:
                problems.append(f"item {item.id!r}: {member!r} is not in the archive")
            else:
                try:
                    head = archive.read(member, 16)
                    problem = head_problem(head, repr(member), formats=False)
                except OSError as exc:
                    problem = f"cannot read {member!r}: {exc}"
                if problem is not None:
                    problems.append(f"item {item.id!r}: {problem}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BenchmarkError(
            f"{len(problems)} image problem(s) in {archive.path}:\n  {shown}{more}"
        )
