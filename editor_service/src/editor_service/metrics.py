"""The editor's Prometheus metrics, on top of the HTTP metrics every service has."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service_kit.metrics import ServiceMetrics
from service_kit.replica_metrics import ReplicaMetrics

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
        self.client_disconnects = Counter(
            "editor_client_disconnects_total",
            "Jobs whose client went away before the answer.",
            registry=r,
        )
        self.device_memory_peak = Gauge(
            "editor_device_memory_peak_bytes",
            "Peak device memory allocated by a worker's model since it loaded.",
            ["worker"],
            registry=r,
        )
        self.replicas = ReplicaMetrics("editor", r)  # state, restarts, loads, hand-overs
