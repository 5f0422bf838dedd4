"""The editor's Prometheus metrics, on top of the HTTP metrics every service has."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service_kit.metrics import ServiceMetrics
from service_kit.replica_metrics import AdmissionMetrics, ReplicaMetrics

_EDIT_BUCKETS = (0.5, 1, 2, 4, 8, 15, 30, 45, 60, 90, 120, 300, 600)


class EditorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("editor")
        r = self.registry
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
        self.device_memory_peak = Gauge(
            "editor_device_memory_peak_bytes",
            "Peak device memory allocated by a worker's model since it loaded.",
            ["worker"],
            registry=r,
        )
        self.admission = AdmissionMetrics("editor", r, unit="Jobs", wait_buckets=_EDIT_BUCKETS)
        self.replicas = ReplicaMetrics("editor", r)  # state, restarts, loads, hand-overs
