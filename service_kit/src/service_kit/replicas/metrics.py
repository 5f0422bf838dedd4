"""The replica and admission metrics both services export, under the same names and labels.

``<service>_replica_state{replica,device,state}`` and ``<service>_replica_restarts_total
{replica,device}`` are read from the replica set at scrape time (a collector), so they are never
stale; model loads and GPU hand-overs are histograms observed by the replica set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service_kit.http.client_identity import MAX_CLIENT_LABELS, ClientLabels
from service_kit.replicas.processes import WorkerHandle

REPLICA_STATES = ("starting", "ready", "released", "restarting", "failed", "stopped")


class ReplicaMetrics:
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.model_load_seconds = Histogram(
            f"{service}_model_load_seconds",
            "Time a replica took to load its model.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600),
            registry=registry,
        )
        self.handover_seconds = Histogram(
            f"{service}_handover_seconds",
            "GPU hand-over time, by action (release: one replica's; load: until all serve).",
            ["action"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self._replicas: Callable[[], Sequence[WorkerHandle]] = tuple
        registry.register(_ReplicaCollector(service, lambda: self._replicas()))

    def watch(self, replicas: Callable[[], Sequence[WorkerHandle]]) -> None:
        """Where the replicas' states and restart counts are read at each scrape."""
        self._replicas = replicas


class AdmissionMetrics:
    """The queue in front of the replicas: its depth and wait, refusals and disconnects."""

    def __init__(
        self,
        service: str,
        registry: CollectorRegistry,
        *,
        unit: str,
        wait_buckets: tuple[float, ...],
    ) -> None:
        self.depth = Gauge(f"{service}_queue_depth", f"{unit} waiting.", registry=registry)
        self.wait = Histogram(
            f"{service}_queue_wait_seconds",
            f"Time {unit.lower()} waited to start.",
            buckets=wait_buckets,
            registry=registry,
        )
        self.rejected = Counter(
            f"{service}_rejected_total",
            "Requests refused or dropped before the model, by reason (queue_full, deadline).",
            ["reason"],
            registry=registry,
        )
        self.disconnects = Counter(
            f"{service}_client_disconnects_total",
            "Requests whose client went away before the answer.",
            registry=registry,
        )
        self.client_labels = ClientLabels()
        self.client_depth = Gauge(
            f"{service}_client_queue_depth",
            f"{unit} waiting, by client (at most {MAX_CLIENT_LABELS} named, the rest 'other').",
            ["client"],
            registry=registry,
        )
        self.client_wait = Histogram(
            f"{service}_client_queue_wait_seconds",
            f"Time {unit.lower()} waited to start, by client (named as in client_queue_depth).",
            ["client"],
            buckets=wait_buckets,
            registry=registry,
        )

    def queued(self, depths: Mapping[str, int]) -> None:
        """The queue's depth, in all and by client."""
        self.depth.set(sum(depths.values()))
        for label, depth in self.client_labels.depths(dict(depths)).items():
            self.client_depth.labels(label).set(depth)

    def waited(self, client: str, seconds: float) -> None:
        self.wait.observe(seconds)
        self.client_wait.labels(self.client_labels(client)).observe(seconds)


class _ReplicaCollector:
    def __init__(self, service: str, replicas: Callable[[], Sequence[WorkerHandle]]) -> None:
        self.service = service
        self.replicas = replicas

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            f"{self.service}_replica_restarts",
            "Worker processes started again after an exit, by replica.",
            labels=["replica", "device"],
        )
        state = GaugeMetricFamily(
            f"{self.service}_replica_state",
            "1 for each replica's current state.",
            labels=["replica", "device", "state"],
        )
        for replica in self.replicas():
            labels = [str(replica.index), replica.device]
            restarts.add_metric(labels, replica.restarts)
            for name in REPLICA_STATES:
                state.add_metric([*labels, name], float(replica.state == name))
        yield restarts
        yield state
