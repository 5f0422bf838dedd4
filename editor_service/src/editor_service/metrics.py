"""The editor's Prometheus metrics, on top of the HTTP metrics every service has."""

from __future__ import annotations

from service_kit.http.metrics import ServiceMetrics
from service_kit.replicas.metrics import AdmissionMetrics, ReplicaMetrics

_EDIT_BUCKETS = (0.5, 1, 2, 4, 8, 15, 30, 45, 60, 90, 120, 300, 600)


class EditorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("editor")
        self.edit_seconds = self.histogram(
            "edit_seconds", "Time a worker spent on one edit.", buckets=_EDIT_BUCKETS
        )
        self.jobs = self.counter(
            "jobs_total",
            "Jobs that reached a worker, by outcome "
            "(ok, invalid_input, out_of_memory, cancelled, backend_error, worker_died).",
            ["outcome"],
        )
        self.device_memory_peak = self.gauge(
            "device_memory_peak_bytes",
            "Peak device memory allocated by a worker's model since it loaded.",
            ["worker"],
        )
        self.admission = AdmissionMetrics(
            "editor", self.registry, unit="Jobs", wait_buckets=_EDIT_BUCKETS
        )
        # The replicas' state, restarts, loads and hand-overs, as on every service.
        self.replicas = ReplicaMetrics("editor", self.registry)
