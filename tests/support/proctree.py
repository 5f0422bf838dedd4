"""A service's process tree from /proc (Linux): which processes it has, and their memory.

A service is its API process plus the worker processes it spawned; a worker that died and was
restarted shows as a new pid, so comparing ``descendants`` before and after proves none died.
"""

from __future__ import annotations

from pathlib import Path

_PROC = Path("/proc")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in (_PROC / str(pid) / "task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(found))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (workers, their helpers), not ``pid`` itself."""
    out: list[int] = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return sorted(out)


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), 0 for a process that is gone."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it."""
    return sum(status_kib(p, "VmRSS") for p in [pid, *descendants(pid)]) * 1024


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory ``pid`` itself ever had (VmHWM): a spike leaves it raised."""
    return status_kib(pid, "VmHWM") * 1024
