"""One replica runtime for both services, worker-process side.

`ReplicaRuntime` is what both worker mains stand on: it pins the device (before torch is
imported), shares the CPU, builds the backend, loads the model and reports (ready, or why not),
releases and reloads it on request, and `guarded` runs one unit of work so that running out of
device memory frees the allocator's cache and answers a retryable failure instead of killing the
replica. The services add only how they take work (the editor: one job at a time with a cancel
flag; the judge: a preparing thread feeding the model thread).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, Protocol, TypeVar

from service_kit.logs import configure_logging
from service_kit.models.oom import free_device_memory, is_out_of_memory
from service_kit.models.refusals import EXIT_CONFIG_REFUSED, ConfigurationRefused
from service_kit.replicas.processes import limit_cpu_threads, pin_device
from service_kit.replicas.replica_set import (
    LoadModel,
    ReleaseModel,
    ReplicaLoadFailed,
    ReplicaReady,
    ReplicaReleased,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ModelBackend(Protocol):
    """What the runtime needs of either service's backend."""

    def load(self, device: str) -> Any: ...
    def release(self) -> None: ...


B = TypeVar("B", bound=ModelBackend)


@dataclass(frozen=True, slots=True)
class Failure:
    """A unit of work that failed inside the model: out of memory (retryable) or an error."""

    kind: Literal["out_of_memory", "backend_error"]
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind == "out_of_memory"


class ReplicaRuntime(Generic[B]):
    """A worker process's side of one replica; see the module docstring.

    ``events`` may be written from several threads: every send holds one lock."""

    def __init__(
        self,
        name: str,
        device: str,
        cpu_threads: int | None,
        log_level: str,
        events: Connection,
        make_backend: Callable[[], B],
    ) -> None:
        configure_logging(log_level)
        self.name = name
        self.device = pin_device(device)  # before the backend (and torch) is imported
        limit_cpu_threads(cpu_threads)
        self._events = events
        self._lock = threading.Lock()
        try:
            self.backend = make_backend()
        except ConfigurationRefused as exc:  # a setting the backend cannot take: as in load
            self._refuse(exc)

    def send(self, event: object) -> None:
        with self._lock:
            self._events.send(event)

    def start(self, load_on_start: bool) -> bool:
        """Load now, or report released and wait for LoadModel; False if the load failed (the
        worker then exits and the API process restarts it with backoff). A load refused for its
        configuration ends the process at once (see ``load``)."""
        if load_on_start:
            return self.load()
        self.send(ReplicaReleased(0.0))
        return True

    def load(self) -> bool:
        """Load the model and report it: True when ready, False when the load failed (the
        worker exits; it is restarted with backoff). A `ConfigurationRefused` (here, or from
        building the backend) is reported as final and ends the process with
        ``EXIT_CONFIG_REFUSED`` (SystemExit): the supervisor gives the replica up at once, since
        no restart can fix it."""
        started = time.perf_counter()
        try:
            model = self.backend.load(self.device)
        except ConfigurationRefused as exc:
            self._refuse(exc)
        except Exception as exc:
            logger.exception("%s could not load its model on %s", self.name, self.device)
            self.send(ReplicaLoadFailed(os.getpid(), f"{type(exc).__name__}: {exc}"))
            return False
        self.send(ReplicaReady(os.getpid(), model, time.perf_counter() - started))
        logger.info("%s ready on %s", self.name, self.device)
        return True

    def _refuse(self, exc: ConfigurationRefused) -> NoReturn:
        """Report a refusal as final and end the process with ``EXIT_CONFIG_REFUSED``."""
        message = f"{type(exc).__name__}: {exc}"
        logger.error("%s refused its configuration on %s: %s", self.name, self.device, message)
        self.send(ReplicaLoadFailed(os.getpid(), message, final=True))
        raise SystemExit(EXIT_CONFIG_REFUSED) from None

    def release(self) -> None:
        started = time.perf_counter()
        self.backend.release()
        self.send(ReplicaReleased(time.perf_counter() - started))

    def handle_lifecycle(self, message: object) -> bool | None:
        """Run a LoadModel or ReleaseModel: True when done, False when a load failed (exit);
        None when ``message`` is neither (the service's own work)."""
        if isinstance(message, ReleaseModel):
            self.release()
            return True
        if isinstance(message, LoadModel):
            return self.load()
        return None

    @staticmethod
    def guarded(
        work: Callable[[], T],
        *,
        what: str,
        oom_types: tuple[type[BaseException], ...],
        oom_message: str,
        error_message: str,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T | Failure:
        """Run ``work``; out of device memory and unexpected errors become a `Failure`.

        After out of memory, with the exception and the tensors its traceback held gone, the
        allocator's cache is emptied so the replica goes on serving. ``passthrough`` exceptions
        are raised as they are (the caller's own signals)."""
        failed: Failure
        try:
            return work()
        except passthrough:
            raise
        except oom_types as exc:
            logger.warning("%s: %s", what, exc)
            failed = Failure("out_of_memory", str(exc))
        except Exception as exc:
            if not is_out_of_memory(exc):
                logger.exception("%s failed inside the model", what)
                return Failure("backend_error", error_message)
            logger.warning("%s: out of device memory", what)
            failed = Failure("out_of_memory", oom_message)
        free_device_memory()
        return failed
