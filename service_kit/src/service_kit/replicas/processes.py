"""Worker processes, as both services run them: one per device, each with its own pipes.

- ``pin_device`` / ``limit_cpu_threads``: run first thing in a spawned worker, before torch loads.
- ``EventReader``: one thread waits on every worker's event pipe and hands each message to the
  event loop; a worker that exits closes its pipe, which is reported too.
- ``RestartPolicy``: how soon to restart a worker that exited, and when to give up on it.

Each worker has its own pipes, so a worker killed mid-write corrupts nothing the others use.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from service_kit.models.refusals import EXIT_CONFIG_REFUSED

logger = logging.getLogger(__name__)

SPAWN = mp.get_context("spawn")


def pin_device(device: str) -> str:
    """Make ``cuda:N`` the only GPU this process sees; returns the device name to use inside.

    N indexes the GPUs visible to the service (its own CUDA_VISIBLE_DEVICES, if set).
    """
    if not device.startswith("cuda:"):
        return device
    index = int(device.split(":", 1)[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",")[index].strip() if visible else str(index)
    os.environ["CUDA_VISIBLE_DEVICES"] = physical
    # Growable segments instead of fixed blocks: batches of varying shapes (the judge's) or a
    # model's load and release (both services) otherwise fragment the cache until a batch that
    # fits on paper runs out of memory. A value set by the operator wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    return "cuda:0"


def limit_cpu_threads(threads: int | None) -> None:
    """Share the cores among CPU workers (set before torch is imported, which reads these)."""
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)


def cpu_threads_per_worker(devices: list[str]) -> int:
    cpu_workers = sum(d == "cpu" for d in devices)
    return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))


def _worker_entry(target: Callable[..., None], *args: Any) -> None:
    """A worker's first step: Ctrl+C in a terminal signals the whole process group, and the
    API process drains on it (service_kit.app.server); its workers must go on with their jobs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target(*args)


class EventReader:
    """A thread that reads every registered pipe and calls back on the event loop.

    ``on_event(key, message)`` for each message; ``on_closed(key)`` once a pipe's writer is gone
    (the worker exited). Both run on the loop, never on the reader thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[Hashable, Any], None],
        on_closed: Callable[[Hashable], None],
        name: str,
    ) -> None:
        self._loop = loop
        self._on_event = on_event
        self._on_closed = on_closed
        self._pipes: dict[Connection, Hashable] = {}
        self._lock = threading.Lock()
        self._wakeup_recv, self._wakeup_send = SPAWN.Pipe(duplex=False)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, key: Hashable, pipe: Connection) -> None:
        with self._lock:
            self._pipes[pipe] = key
        self._wake()

    def remove(self, pipe: Connection) -> None:
        with self._lock:
            self._pipes.pop(pipe, None)
        with contextlib.suppress(OSError):
            pipe.close()
        self._wake()

    async def stop(self) -> None:
        self._closing = True
        self._wake()
        await asyncio.to_thread(self._thread.join, 5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wakeup_send.send(None)

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                watched: list[Any] = [self._wakeup_recv, *self._pipes]
            try:
                ready: list[Any] = wait(watched, timeout=1.0)
            except OSError:
                continue
            for pipe in ready:
                if pipe is self._wakeup_recv:
                    with contextlib.suppress(EOFError, OSError):
                        pipe.recv()
                    continue
                with self._lock:
                    key = self._pipes.get(pipe)
                if key is None:
                    continue
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    with self._lock:
                        self._pipes.pop(pipe, None)
                    self._loop.call_soon_threadsafe(self._on_closed, key)
                    continue
                self._loop.call_soon_threadsafe(self._on_event, key, message)


@dataclass
class RestartPolicy:
    """Restart a worker that exited after a growing delay; give up after too many exits."""

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    _exits: dict[Hashable, collections.deque[float]] = field(default_factory=dict)

    def after_exit(self, worker: Hashable, now: float) -> float | None:
        """Seconds to wait before restarting ``worker``, or None to give up on it."""
        exits = self._exits.setdefault(worker, collections.deque())
        exits.append(now)
        while exits and exits[0] < now - self.window_s:
            exits.popleft()
        if len(exits) > self.max_restarts:
            return None
        return self.backoff_s[min(len(exits) - 1, len(self.backoff_s) - 1)]

    def exits(self, worker: Hashable) -> int:
        return len(self._exits.get(worker, ()))


@dataclass(eq=False)
class WorkerHandle:
    """The API process's view of one worker process. Services subclass it for their own state."""

    index: int
    device: str
    state: str = "starting"  # the supervisor sets starting, restarting, failed and stopped
    process: Any = None  # a SpawnProcess
    pipe: Connection | None = None  # API -> worker
    pid: int | None = None
    restarts: int = 0
    restart_at: float | None = None
    refused: bool = False  # its load was refused for its configuration: given up at once


class Supervisor:
    """Spawns one process per handle, watches them, restarts the ones that exit, stops them all.

    ``target(*args(handle), jobs, events)`` runs in the child; ``jobs`` brings what ``send``
    sends (None means stop), ``events`` carries the child's messages to ``on_event(handle, m)``.
    When a child exits unasked, ``on_exit(handle, exitcode)`` runs first (fail what it held), then
    the policy decides: restart later (state "restarting") or give up (state "failed"). A child
    that exits with ``EXIT_CONFIG_REFUSED`` (its load was refused for its configuration) is given
    up at once, whatever the policy.
    ``on_tick(now)`` runs on every monitor pass (deadlines, dispatch).
    """

    def __init__(
        self,
        handles: list[Any],
        *,
        target: Callable[..., None],
        args: Callable[[Any], tuple[Any, ...]],
        name: str,
        policy: RestartPolicy,
        on_event: Callable[[Any, Any], None],
        on_exit: Callable[[Any, int | None], None],
        on_tick: Callable[[float], None] = lambda _now: None,
        interval_s: float = 0.25,
    ) -> None:
        self.handles = handles
        self._target = target
        self._args = args
        self._name = name
        self.policy = policy
        self._on_event = on_event
        self._on_exit = on_exit
        self._on_tick = on_tick
        self._interval_s = interval_s
        self._events: dict[int, Connection] = {}
        self._reader: EventReader | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader = EventReader(loop, self._event, self._closed, name=f"{self._name}-events")
        self._reader.start()
        for handle in self.handles:
            self.spawn(handle)
        self._monitor = asyncio.create_task(self._watch(), name=f"{self._name}-monitor")

    def send(self, handle: Any, message: Any) -> bool:
        """Send to a worker; False if it is gone (the monitor will notice its exit)."""
        try:
            if handle.pipe is None:
                return False
            handle.pipe.send(message)
            return True
        except (OSError, ValueError):
            logger.warning("%s %d: could not send %s", self._name, handle.index, type(message))
            return False

    def spawn(self, handle: Any) -> None:
        if handle.process is not None:
            handle.restarts += 1
        jobs_recv, jobs_send = SPAWN.Pipe(duplex=False)
        events_recv, events_send = SPAWN.Pipe(duplex=False)
        process = SPAWN.Process(
            target=_worker_entry,
            args=(self._target, *self._args(handle), jobs_recv, events_send),
            name=f"{self._name}-{handle.index}",
            daemon=True,
        )
        process.start()
        jobs_recv.close()
        events_send.close()
        handle.process, handle.pipe, handle.pid = process, jobs_send, process.pid
        handle.state, handle.restart_at = "starting", None
        self._events[handle.index] = events_recv
        assert self._reader is not None
        self._reader.add(handle.index, events_recv)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to stop, then terminate and kill the ones that do not."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await asyncio.to_thread(self._stop_processes, timeout_s)
        if self._reader is not None:
            await self._reader.stop()

    def _stop_processes(self, timeout_s: float) -> None:
        for handle in self.handles:
            if handle.process is not None and handle.process.is_alive():
                self.send(handle, None)
        for handle in self.handles:
            process = handle.process
            if process is None:
                continue
            process.join(timeout_s)
            if process.is_alive():
                logger.warning("%s %d did not stop; terminating", self._name, handle.index)
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
            handle.state = "stopped"

    def _event(self, key: Hashable, message: Any) -> None:
        self._on_event(self.handles[int(key)], message)  # type: ignore[call-overload]

    def _closed(self, key: Hashable) -> None:
        """A worker's event pipe closed: it exited; the next monitor pass handles it."""
        pipe = self._events.pop(int(key), None)  # type: ignore[call-overload]
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await asyncio.sleep(self._interval_s)
            try:
                self._pass(loop.time())
            except Exception:
                logger.exception("%s monitor pass failed", self._name)

    def _pass(self, now: float) -> None:
        for handle in self.handles:
            process = handle.process
            if handle.state == "restarting":
                if handle.restart_at is not None and now >= handle.restart_at:
                    self.spawn(handle)
            elif (
                process is not None
                and not process.is_alive()
                and handle.state not in ("failed", "stopped")
            ):
                self._exited(handle, process.exitcode, now)
        self._on_tick(now)

    def _exited(self, handle: Any, exitcode: int | None, now: float) -> None:
        logger.error(
            "%s %d (pid %s) exited with code %s", self._name, handle.index, handle.pid, exitcode
        )
        self._on_exit(handle, exitcode)
        if handle.pipe is not None:
            with contextlib.suppress(OSError):
                handle.pipe.close()
            handle.pipe = None
        if exitcode == EXIT_CONFIG_REFUSED:
            # Final: never spawned again, so its event pipe stays with the reader, which hands
            # over what is left in it (why the load was refused) and then closes it.
            handle.state, handle.refused = "failed", True
            self.policy.after_exit(handle.index, now)  # counted, as every exit is
            logger.error(
                "%s %d refused its configuration; giving up on it at once (no restart can help)",
                self._name,
                handle.index,
            )
            return
        pipe = self._events.pop(handle.index, None)
        if pipe is not None and self._reader is not None:
            self._reader.remove(pipe)
        delay = self.policy.after_exit(handle.index, now)
        if delay is None:
            handle.state = "failed"
            logger.error(
                "%s %d exited %d times in %.0fs; giving up on it",
                self._name,
                handle.index,
                self.policy.exits(handle.index),
                self.policy.window_s,
            )
        else:
            handle.state, handle.restart_at = "restarting", now + delay
            logger.info("restarting %s %d in %.1fs", self._name, handle.index, delay)
