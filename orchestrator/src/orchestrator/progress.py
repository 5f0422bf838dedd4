"""Progress of a phase: the runner reports, a view shows (rich bars in a terminal, plain lines in
a log, nothing in tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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

from orchestrator.wording import counted


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
        fresh = int(task.fields.get("fresh", task.completed))  # done by this run, not before
        if not fresh or elapsed <= 0:
            return Text("  -  /min  ETA -", style="progress.data.speed")
        rate = fresh / elapsed
        left = max(0.0, (task.total or 0) - task.completed) / rate
        eta = f"{int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
        return Text(f"{rate * 60:5.1f}/min  ETA {eta}", style="progress.data.speed")


class RichProgress:
    """One bar per phase: done/total (jobs already done before count as done), failed and
    already-done counts, rate, elapsed and ETA (both from this run's jobs only)."""

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
        self._fresh = 0
        self._task = self._progress.add_task(phase, total=total, detail=self._detail(), fresh=0)

    def _detail(self) -> str:
        failed = f"[red]{self._failed} failed[/]" if self._failed else "0 failed"
        before = f", {self._skipped} done before" if self._skipped else ""
        return f"{failed}{before}"

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None:
        if self._progress is None or self._task is None:
            return
        if skipped:
            self._skipped += count  # done, but not by this run: left out of the rate
        else:
            self._fresh += count
            if not ok:
                self._failed += count
        self._progress.advance(self._task, count)
        self._progress.update(self._task, detail=self._detail(), fresh=self._fresh)

    def note(self, message: str) -> None:
        self.console.log(message)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class LineProgress:
    """For logs (CI, nohup, a pipe): a plain line when a phase starts and ends and at least
    every ``interval_s`` in between, even while nothing finishes (done, failed, rate, ETA).

    A daemon thread wakes every ``tick_s`` to keep the promise while the event loop waits on a
    slow job; ``tick_s=None`` leaves it to the caller (tests call ``tick``)."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        interval_s: float = 30.0,
        tick_s: float | None = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._interval_s = interval_s
        self._tick_s = tick_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phase = ""
        self._total = self._done = self._failed = self._skipped = 0
        self._started = self._last = 0.0

    def start(self, phase: str, total: int) -> None:
        self.finish()
        with self._lock:
            self._phase, self._total = phase, total
            self._done = self._failed = self._skipped = 0
            self._started = self._last = self._clock()
            self._write(f"{phase}: {counted(total, 'job')}")
        if self._tick_s is not None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._ticker, name=f"progress-{phase}", daemon=True
            )
            self._thread.start()

    def _ticker(self) -> None:
        assert self._tick_s is not None
        while not self._stop.wait(self._tick_s):
            self.tick()

    def line(self) -> str:
        """``edit: 50/120 done (10 before this run), 2 failed, 3.1/min, ETA 0:22:35, elapsed
        0:13:00``: jobs done before count as done, the rate and ETA are this run's."""
        elapsed = self._clock() - self._started
        rate = self._done / elapsed if elapsed > 0 and self._done else 0.0
        left = self._total - self._skipped - self._done
        eta = _clock(left / rate) if rate else "-"
        before = f" ({self._skipped} before this run)" if self._skipped else ""
        return (
            f"{self._phase}: {self._done + self._skipped}/{self._total} done{before}, "
            f"{self._failed} failed, {rate * 60:.1f}/min, ETA {eta}, elapsed {_clock(elapsed)}"
        )

    def tick(self) -> None:
        """Print the line if ``interval_s`` passed since the last one."""
        with self._lock:
            if self._phase and self._clock() - self._last >= self._interval_s:
                self._last = self._clock()
                self._write(self.line())

    def advance(self, *, ok: bool = True, skipped: bool = False, count: int = 1) -> None:
        with self._lock:
            if skipped:
                self._skipped += count
            else:
                self._done += count
                if not ok:
                    self._failed += count
        self.tick()

    def note(self, message: str) -> None:
        with self._lock:
            self._write(message)

    def finish(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._phase:
                left = self._total - self._skipped - self._done
                over = " (phase over)" if left <= 0 else f" (stopped, {counted(left, 'job')} left)"
                self._write(self.line() + over)
                self._phase = ""
