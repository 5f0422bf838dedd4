"""Progress of a phase: the runner reports, a view shows (rich in a terminal, nothing in tests)."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class PhaseProgress(Protocol):
    def start(self, phase: str, total: int) -> None: ...

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Shows nothing; counts, for tests."""

    def __init__(self) -> None:
        self.ok = self.failed = self.skipped = 0

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None:
        if skipped:
            self.skipped += count
        elif ok:
            self.ok += count
        else:
            self.failed += count

    def note(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass


class _RateColumn(ProgressColumn):
    """Jobs per minute and time left, averaged over the whole phase: per-job times of seconds
    to minutes make rich's 30-second speed window useless."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if not task.completed or elapsed <= 0:
            return Text("  -  /min  ETA -", style="progress.data.speed")
        rate = task.completed / elapsed
        left = max(0.0, (task.total or 0) - task.completed) / rate
        eta = f"{int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
        return Text(f"{rate * 60:5.1f}/min  ETA {eta}", style="progress.data.speed")


class RichProgress:
    """One bar per phase: done/total, failed and skipped counts, rate, elapsed and ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._phase = ""
        self._failed = 0
        self._skipped = 0
        self._total = 0

    def start(self, phase: str, total: int) -> None:
        self._phase, self._failed, self._skipped, self._total = phase, 0, 0, total
        self._progress = Progress(
            TextColumn("[bold]{task.description:<6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            _RateColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(phase, total=total, detail=self._detail())

    def _detail(self) -> str:
        failed = f"[red]{self._failed} failed[/]" if self._failed else "0 failed"
        return f"{failed}, {self._skipped} already done"

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None:
        if self._progress is None or self._task is None:
            return
        if skipped:
            self._skipped += count
            # Already-done jobs count towards the total but not towards the rate.
            self._total -= count
            self._progress.update(self._task, total=self._total)
        elif not ok:
            self._failed += count
        if not skipped:
            self._progress.advance(self._task, count)
        self._progress.update(self._task, detail=self._detail())

    def note(self, message: str) -> None:
        self.console.log(message)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
