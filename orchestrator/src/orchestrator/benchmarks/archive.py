"""Benchmarks whose images the hub keeps in a zip archive beside the JSON index, read from the
archive as it is (a hub cache is never unpacked; nothing is written next to it).

RISEBench on the hub (``PhoenixZ/RISEBench``): ``datav2_total_w_subtask.json`` and ``data.zip``,
whose members are ``data/<category>_images/<n>.png``; the JSON's image paths are relative to
that ``data/`` folder (gpt_eval.py ``--input data``; readers that unpack it: BAGEL's
eval/gen/rise README, "data/ ... causal_reasoning_images ...").
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Sequence
from pathlib import Path

from orchestrator.benchmarks.folder import EXTRA_IMAGE_KEYS, FolderBenchmark
from orchestrator.benchmarks.items import BenchmarkError, Item


def _member(prefix: str, relpath: str) -> str | None:
    """The archive member a relative image path names, or None when it would leave the prefix."""
    name = posixpath.normpath(relpath.replace("\\", "/"))
    if name.startswith(("../", "/")) or name in ("..", "."):
        return None
    return prefix + name


def find_prefix(archive: Path, first_image: str) -> str | None:
    """The folder inside ``archive`` that ``first_image`` is relative to ('' or 'data/')."""
    target = posixpath.normpath(first_image)
    try:
        with zipfile.ZipFile(archive) as opened:
            for name in opened.namelist():
                if name == target:
                    return ""
                if name.endswith("/" + target):
                    return name[: -len(target)]
    except (OSError, zipfile.BadZipFile) as exc:
        raise BenchmarkError(f"{archive}: not a readable zip archive: {exc}") from None
    return None


class ZipBenchmark(FolderBenchmark):
    """A `FolderBenchmark` whose image files are members of one zip archive."""

    format = "zip"

    def __init__(
        self, path: Path, archive: Path, prefix: str, items: Sequence[Item], *, name: str
    ) -> None:
        super().__init__(path, archive.parent, items, name=name)
        self.archive = archive
        self.prefix = prefix

    def _read(self, item: Item, relpath: str) -> bytes:
        member = _member(self.prefix, relpath)
        if member is None:
            raise BenchmarkError(f"item {item.id!r}: image path {relpath!r} leaves the archive")
        try:
            with zipfile.ZipFile(self.archive) as opened:
                return opened.read(member)
        except KeyError:
            raise BenchmarkError(f"item {item.id!r}: {member!r} is not in {self.archive}") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise BenchmarkError(f"item {item.id!r}: cannot read {self.archive}: {exc}") from None


def check_members(archive: Path, prefix: str, items: Sequence[Item]) -> None:
    """Every image an item names is a member of ``archive``; all offenders named together."""
    with zipfile.ZipFile(archive) as opened:
        names = set(opened.namelist())
    problems: list[str] = []
    for item in items:
        paths = [item.source]
        for key in EXTRA_IMAGE_KEYS:
            value = item.extra.get(key)
            paths += [value] if isinstance(value, str) else [str(p) for p in value or []]
        for relpath in paths:
            member = _member(prefix, relpath)
            if member is None:
                problems.append(f"item {item.id!r}: image path {relpath!r} leaves the archive")
            elif member not in names:
                problems.append(f"item {item.id!r}: {member!r} is not in the archive")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BenchmarkError(f"{len(problems)} image problem(s) in {archive}:\n  {shown}{more}")
