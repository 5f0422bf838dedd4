"""The editor's Prometheus metrics, on top of the HTTP metrics every service has."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service_kit.metrics import ServiceMetrics
from shared_schemas import WorkerState

_STATES: tuple[WorkerState, ...] = (
    "starting",
    "ready",
    "busy",
    "failed",
    "restarting",
    "stopped",
    "released",
)
_EDIT_BUCKETS = (0.5, 1, 2, 4, 8, 15, 30, 45, 60, 90, 120, 300, 600)


class EditorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("editor")
        r = self.registry
        self.queue_depth = Gauge("editor_queue_depth", "Jobs waiting for a worker.", registry=r)
        self.queue_wait = Histogram(
            "editor_queue_wait_seconds",
            "Time jobs waited for a worker.",
            buckets=_EDIT_BUCKETS,
            registry=r,
        )
        self.edit_seconds = Histogram(
            "editor_edit_seconds",
            "Time a worker spent on one edit.",
            buckets=_EDIT_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "editor_jobs_total",
            "Jobs that reached a worker, by outcome "
            "(ok, invalid_input, out_of_memory, cancelled, backend_error, worker_died).",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "editor_rejected_total",
            "Requests refused before reaching a worker, by reason (queue_full, deadline).",
            ["reason"],
            registry=r,
        )
        self.worker_state = Gauge(
            "editor_worker_state",
            "1 for each worker's current state.",
            ["worker", "state"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "editor_worker_restarts_total",
            "Worker processes started again after an exit.",
            registry=r,
        )
        self.client_disconnects = Counter(
            "editor_client_disconnects_total",
            "Jobs whose client went away before the answer.",
            registry=r,
        )
        self.model_load_seconds = Histogram(
            "editor_model_load_seconds",
            "Time a worker took to load its model.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.device_memory_peak = Gauge(
            "editor_device_memory_peak_bytes",
            "Peak device memory allocated by a worker's model since it loaded.",
            ["worker"],
            registry=r,
        )
        self.handover_seconds = Histogram(
            "editor_handover_seconds",
            "GPU hand-over time, by action (release, load).",
            ["action"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def set_worker_state(self, worker: int, state: WorkerState) -> None:
        for candidate in _STATES:
            self.worker_state.labels(str(worker), candidate).set(1 if candidate == state else 0)
