"""The reward service's Prometheus metrics, on top of the HTTP metrics every service has."""

from __future__ import annotations

from reward_service.messages import BatchDone
from service_kit.http.metrics import ServiceMetrics
from service_kit.replicas.metrics import AdmissionMetrics, ReplicaMetrics

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RewardMetrics(ServiceMetrics):
    """Batch metrics come from the admission queue (``batch_done``) and the workers."""

    def __init__(self) -> None:
        super().__init__("reward")
        self.batch_size = self.histogram(
            "batch_size",
            "Items (each with all its questions) per model call.",
            buckets=_SIZE_BUCKETS,
        )
        self.batch_requests = self.histogram(
            "batch_requests", "Distinct client requests per model call.", buckets=_SIZE_BUCKETS
        )
        self.batch_seconds = self.histogram(
            "batch_seconds",
            "Wall time of one model call, preprocessing included.",
            buckets=_SECONDS_BUCKETS,
        )
        self.batches = self.counter(
            "batches_total", "Model calls, by outcome (ok, failed).", ["outcome"]
        )
        self.items = self.counter(
            "items_total",
            "Items answered, by protocol, mode and outcome (scored, unscored).",
            ["protocol", "mode", "outcome"],
        )
        self.questions = self.counter(
            "questions_total",
            "Questions answered, by mode and outcome (scored, unscored).",
            ["mode", "outcome"],
        )
        self.score_mass = self.histogram(
            "score_mass",
            "expected mode: the probability the judge gave to answering with a score at all.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0),
        )
        self.worker_seconds = self.histogram(
            "worker_seconds",
            "Inside a judge worker, per batch: preparation (template, image processing, tokens; "
            "overlaps the model) and the model's own time.",
            ["stage"],
            buckets=_SECONDS_BUCKETS,
        )
        self.model_waiting_seconds = self.counter(
            "model_waiting_seconds",
            "Time a loaded judge model had nothing to run, by reason: no batch had reached its "
            "worker (idle: no demand, or the API process is behind), or the next batch was "
            "still being prepared (preparing: preprocessing is not keeping up).",
            ["reason"],
        )
        self.replica_batches = self.counter(
            "replica_batches",
            "Batches each judge replica ran: how the batcher spreads work over the devices.",
            ["replica", "device"],
        )
        self.replica_model_seconds = self.counter(
            "replica_model_seconds",
            "Time each judge replica's model spent on batches.",
            ["replica", "device"],
        )
        self.admission = AdmissionMetrics(
            "reward", self.registry, unit="Questions", wait_buckets=_SECONDS_BUCKETS
        )
        # The replicas' state, restarts, loads and hand-overs, as on every service.
        self.replicas = ReplicaMetrics("reward", self.registry)

    def worker_batch(self, replica: int, device: str, done: BatchDone) -> None:
        self.replica_batches.labels(str(replica), device).inc()
        self.replica_model_seconds.labels(str(replica), device).inc(done.score_s)
        self.worker_seconds.labels("prepare").observe(done.prepare_s)
        self.worker_seconds.labels("model").observe(done.score_s)
        self.model_waiting_seconds.labels("idle").inc(done.idle_s)
        self.model_waiting_seconds.labels("preparing").inc(done.stall_s)

    def batch_done(self, size: int, submissions: int, seconds: float, ok: bool) -> None:
        self.batch_size.observe(size)
        self.batch_requests.observe(submissions)
        self.batch_seconds.observe(seconds)
        self.batches.labels("ok" if ok else "failed").inc()
