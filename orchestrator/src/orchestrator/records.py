"""What a run folder holds, typed: the plan, the edit and score records, result rows, the summary.

Records are written by the phases and read back by resume, report and status. Every reader goes
through these models: a renamed or missing field is a validation error at the line that holds
it (reported with its file and line by `orchestrator.store.RecordLog`), never a silent ``None``.
Unknown fields are ignored, so a folder written by a newer editbench still reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from orchestrator.benchmarks.reporting import Reporting
from orchestrator.benchmarks.statistics import OfficialStatistics
from orchestrator.metrics import MetricSet, answer_values
from shared_schemas import ItemScore, ModelInfo, QuestionScore
from shared_schemas.edits import EditTimings

RECORD_SCHEMA = 1
# summary.json's layout. 0: files written before the schema key (every older shape reads: the
# flat sc/pq/overall statistics of files before the metric set, no jobs before 5e764a8);
# 1: this layout, written by report/build.py, read by RunStore.read_summary.
SUMMARY_SCHEMA = 1
# run.json's layout. 0: files before the schema key: identity and created_at (bd8b994), then
# selection (f3d194e), then services (02193cd); 1: this layout, written by the runner, read by
# RunStore.read_run_file.
RUN_FILE_SCHEMA = 1
LEGACY_METRICS = ("sc", "pq", "overall")  # the metrics of every file before protocols named theirs
Status = Literal["ok", "failed"]


def is_inside_relpath(value: str) -> bool:
    """A relative path that cannot climb out of the folder it is relative to."""
    path = PurePosixPath(value.replace("\\", "/"))
    return bool(value) and not path.is_absolute() and ".." not in path.parts and ":" not in value


class RecordModel(BaseModel):
    """Base of everything stored: frozen, unknown fields ignored, ``schema`` by its name."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


def _with_metrics_flat(data: Any, metrics: dict[str, Any]) -> Any:
    """Each metric also as a key of its own (``row["overall"]``, ``stats["sc"]["mean"]``), as
    files written before protocols declared metrics had them; never over a field's name."""
    if isinstance(data, dict):
        for name, value in metrics.items():
            data.setdefault(name, value)
    return data


class RunFile(RecordModel):
    """run.json: the settings that define the run's jobs (a rerun must agree with them), the
    latest selection, where the services were, and when the folder was made."""

    schema_version: int = Field(default=RUN_FILE_SCHEMA, alias="schema")
    identity: dict[str, Any]
    selection: dict[str, Any] = Field(
        default_factory=dict, description="The latest run's item selection (files since f3d194e)."
    )
    services: dict[str, Any] = Field(
        default_factory=dict,
        description="Where the services were, for a printed --resume (files since 02193cd); "
        "never an API key.",
    )
    created_at: str | None = None

    def dump(self) -> dict[str, Any]:
        return {
            "schema": RUN_FILE_SCHEMA,
            **self.model_dump(mode="json", exclude={"schema_version"}),
        }


def _legacy_into(data: Any, field: str) -> Any:
    """A record written before protocols declared metrics: its flat sc, pq and overall gathered
    into ``field`` (the shape files have had since)."""
    if isinstance(data, dict) and field not in data:
        legacy = {k: data[k] for k in LEGACY_METRICS if k in data}
        if legacy:
            data = {**data, field: legacy}
    return data


# ErrorRecord.type of an item with more input images than the editor's family takes (never sent).
TOO_MANY_INPUTS = "too_many_inputs"


class ErrorRecord(RecordModel):
    """Why a job failed: which service said what (None: it never reached one)."""

    service: str | None = None
    type: str
    message: str
    status: int | None = None
    param: str | None = None


class PlanRow(RecordModel):
    """One selected item of the latest invocation (plan.jsonl): metadata, no image."""

    id: str
    category: str
    instruction: str
    language: str | None = None
    hints: str | None = None
    source: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class EditParams(RecordModel):
    """The edit settings a job ran with; ``seed`` is the item's own (None: the editor chose)."""

    steps: int | None = None  # None: the editor family's default
    cfg: float | None = None
    negative_prompt: str
    seed_policy: str
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    output_format: str = "png"
    params: dict[str, float] = Field(default_factory=dict)


class EditOutcome(RecordModel):
    """What the editor said about a finished edit, besides the image and the model."""

    output_format: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None
    family: str | None = None  # the editor family (qwen-image-edit, flux-kontext...)
    parameters: dict[str, float] = Field(default_factory=dict)  # the family's, as run
    # A served editor (--editor-api openai): the form fields sent besides image and prompt, and
    # the usage it reported (tokens, cost), where it did.
    sent: dict[str, str] = Field(default_factory=dict)
    usage: dict[str, Any] | None = None
    worker: int | None = None
    device: str | None = None
    timings: EditTimings | None = None


class JobRecord(RecordModel):
    """What both phases' records share: the job, its item, how it ended and how it got there."""

    schema_version: int = Field(default=RECORD_SCHEMA, alias="schema")
    job_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    category: str
    language: str | None = None
    instruction: str
    source_sha256: str
    status: Status
    retryable: bool | None = Field(
        default=None, description="Failed jobs: whether a rerun may succeed (None: assume so)."
    )
    error: ErrorRecord | None = None
    attempts: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    finished_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def finished(self, retry_failed: bool) -> bool:
        """Succeeded, or failed permanently (unless asked to retry those)."""
        return self.ok or (self.retryable is False and not retry_failed)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class EditRecord(JobRecord):
    """One line of edits.jsonl."""

    phase: Literal["edit"] = "edit"
    params: EditParams
    image: str | None = Field(default=None, description="Relative to the run folder (ok only).")
    image_sha256: str | None = None
    seed: int | None = None
    model: ModelInfo | None = None
    response: EditOutcome | None = None

    @field_validator("image")
    @classmethod
    def _inside_run_folder(cls, value: str | None) -> str | None:
        if value is not None and not is_inside_relpath(value):
            raise ValueError("must be a path inside the run folder (relative, without '..')")
        return value

    @model_validator(mode="after")
    def _complete(self) -> EditRecord:
        if self.ok and not (self.image and self.image_sha256):
            raise ValueError("an ok edit record needs image and image_sha256")
        if not self.ok and self.error is None:
            raise ValueError("a failed edit record needs error")
        return self


@dataclass(frozen=True, slots=True)
class ScoreJobFields:
    """What every score record of one job says, however the job ended."""

    job_id: str
    item_id: str
    category: str
    language: str | None
    instruction: str
    hints: str | None
    edit_job_id: str | None
    edited_image: str
    edited_sha256: str
    source_sha256: str
    protocol: str
    mode: str
    attempts: int
    retries: int
    finished_at: str


class ScoreRecord(JobRecord):
    """One line of scores.jsonl. ``score`` is the judge's whole answer (ok only). Built by
    ``answered`` or ``failed``."""

    @classmethod
    def _of(cls, job: ScoreJobFields, **outcome: Any) -> ScoreRecord:
        return cls(
            job_id=job.job_id,
            item_id=job.item_id,
            category=job.category,
            language=job.language,
            instruction=job.instruction,
            hints=job.hints,
            edit_job_id=job.edit_job_id,
            edited_image=job.edited_image,
            edited_sha256=job.edited_sha256,
            source_sha256=job.source_sha256,
            protocol=job.protocol,
            mode=job.mode,
            attempts=job.attempts,
            retries=job.retries,
            finished_at=job.finished_at,
            **outcome,
        )

    @classmethod
    def answered(cls, job: ScoreJobFields, result: ItemScore, model: ModelInfo) -> ScoreRecord:
        """The judge answered: its whole answer, and the protocol's metric values from it."""
        return cls._of(
            job,
            status="ok",
            protocol_hash=result.protocol_hash,
            deterministic=result.deterministic,
            scored=result.scored,
            metrics=answer_values(result),
            score=result,
            model=model,
        )

    @classmethod
    def failed(
        cls,
        job: ScoreJobFields,
        error: ErrorRecord,
        *,
        retryable: bool,
        protocol_hash: str | None,
        model: ModelInfo | None,
    ) -> ScoreRecord:
        """The call failed; the record names the judge it was meant for."""
        return cls._of(
            job,
            status="failed",
            retryable=retryable,
            error=error,
            protocol_hash=protocol_hash,
            model=model,
        )

    phase: Literal["score"] = "score"
    hints: str | None = None
    edit_job_id: str | None = None
    edited_image: str
    edited_sha256: str
    protocol: str
    mode: str
    protocol_hash: str | None = None
    deterministic: bool | None = None  # scored in the judge's deterministic mode (issue 19)
    scored: bool | None = None
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="The protocol's metrics, as the judge returned them."
    )
    # Records written before metrics existed carry VIEScore's three (read, never written).
    sc: float | None = None
    pq: float | None = None
    overall: float | None = None
    score: ItemScore | None = None
    model: ModelInfo | None = None

    @model_validator(mode="after")
    def _complete(self) -> ScoreRecord:
        if self.ok and self.score is None:
            raise ValueError("an ok score record needs score")
        if not self.ok and self.error is None:
            raise ValueError("a failed score record needs error")
        return self


def model_name(model: ModelInfo | None) -> str | None:
    if model is None:
        return None
    return f"{model.id}@{model.revision}" if model.revision else model.id


class LeftOutValue(RecordModel):
    """A metric value of a record that no mean uses: damaged or hand-edited."""

    item_id: str
    metric: str
    value: str
    reason: str


class ResultRow(RecordModel):
    """One line of results.jsonl: a planned item with its latest edit and its matching score."""

    item_id: str
    category: str
    language: str | None = None
    instruction: str
    hints: str | None = None
    source: str | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict, description="The manifest's other columns (reporting reads them)."
    )
    source_thumb: str
    more_thumbs: dict[str, str] = Field(
        default_factory=dict,
        description="Thumbnails of the item's further inputs (input_2, ...) and reference image "
        "(reference), by role, where the run made them (the report shows them by the source).",
    )
    edit_status: Literal["ok", "failed", "pending"]
    edit_job_id: str | None = None
    edit_error: ErrorRecord | None = None
    edit_retryable: bool | None = None
    edit_attempts: int | None = None
    edit_retries: int | None = None
    edited_image: str | None = None
    edited_thumb: str
    seed: int | None = None
    edit_s: float | None = None
    editor_model: str | None = None
    editor_meaningful: bool | None = None
    score_status: Literal["ok", "failed", "pending"]
    score_job_id: str | None = None
    score_error: ErrorRecord | None = None
    score_retryable: bool | None = None
    score_attempts: int | None = None
    score_retries: int | None = None
    scored: bool = False
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="The run's metrics in the protocol's order; None where unscored or left out.",
    )
    left_out: list[LeftOutValue] = Field(
        default_factory=list,
        description="Metric values the record held that no mean uses (NaN, inf, off the scale).",
    )
    questions: list[QuestionScore] | None = None
    protocol: str | None = None
    protocol_hash: str | None = None
    deterministic: bool | None = None
    mode: str | None = None
    judge_model: str | None = None
    judge_meaningful: bool | None = None

    @property
    def edited(self) -> bool:
        """Has an edited image (made by this run, or given with --edited-dir)."""
        return self.edit_status == "ok" or bool(self.edited_image)

    @model_validator(mode="before")
    @classmethod
    def _legacy_metrics(cls, data: Any) -> Any:
        """A row written before metrics existed: its sc, pq and overall."""
        return _legacy_into(data, "metrics")

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return _with_metrics_flat(data, dict(data.get("metrics") or {}))

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return None if value is None else float(value)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class MetricStats(RecordModel):
    """n, mean, sample std, min, max and a 95% interval of the mean (Nones when n is 0)."""

    n: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    ci95: list[float] | None = None


class GroupStats(RecordModel):
    """Counts and metric statistics of a group of result rows (a category, a language, all)."""

    n_items: int
    edited: int
    edit_failed: int
    edit_pending: int
    scored: int
    unscored: int
    judge_failed: int
    score_pending: int
    judge_error_rate: float | None
    metrics: dict[str, MetricStats] = Field(
        default_factory=dict, description="Per metric of the run, in the protocol's order."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_metrics(cls, data: Any) -> Any:
        return _legacy_into(data, "metrics")

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return _with_metrics_flat(data, dict(data.get("metrics") or {}))

    def metric(self, name: str) -> MetricStats:
        return self.metrics.get(name) or MetricStats(n=0)


class MacroStats(RecordModel):
    """Unweighted mean over categories of each category's mean."""

    means: dict[str, float | None] = Field(default_factory=dict)
    categories_counted: int
    categories_without_scores: list[str]

    @model_validator(mode="before")
    @classmethod
    def _legacy_means(cls, data: Any) -> Any:
        return _legacy_into(data, "means")

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return _with_metrics_flat(data, dict(data.get("means") or {}))


class TableRow(RecordModel):
    """One row of a declared table: its items, those scored, and each metric's statistics
    (``row["sc"]`` is ``row.metrics["sc"]``)."""

    items: int
    scored: int
    metrics: dict[str, MetricStats] = Field(default_factory=dict)

    def __getitem__(self, metric: str) -> MetricStats:
        return self.metrics[metric]

    @model_validator(mode="before")
    @classmethod
    def _legacy_metrics(cls, data: Any) -> Any:
        return _legacy_into(data, "metrics")

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return _with_metrics_flat(data, dict(data.get("metrics") or {}))


class TableAverage(RecordModel):
    """A declared table's unweighted mean over its rows, per metric (``average["sc"]``)."""

    means: dict[str, float | None] = Field(default_factory=dict)
    rows_counted: int
    rows_without_scores: list[str]

    def __getitem__(self, metric: str) -> float | None:
        return self.means[metric]

    @model_validator(mode="before")
    @classmethod
    def _legacy_means(cls, data: Any) -> Any:
        return _legacy_into(data, "means")

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return _with_metrics_flat(data, dict(data.get("means") or {}))


class DeclaredTable(RecordModel):
    """One of the benchmark's declared tables (report/breakdown.py): per split value and subset,
    a row per value of the row key, their Average and the mean over items (micro)."""

    title: str
    split: dict[str, str]
    subset: str | None
    row_key: str
    row_label: str
    metrics: list[str]
    headline: dict[str, float | None] = Field(
        description="Per metric, the declared headline aggregate (Average or micro mean)."
    )
    items: int
    scored: int
    rows: dict[str, TableRow]
    average: TableAverage
    micro: dict[str, MetricStats]

    @model_validator(mode="before")
    @classmethod
    def _legacy_table(cls, data: Any) -> Any:
        """A table written before 9570e44 (no row_label) or the metric set (no metrics list)."""
        if isinstance(data, dict):
            if "row_label" not in data and "row_key" in data:
                data = {**data, "row_label": data["row_key"]}
            if "metrics" not in data and isinstance(data.get("micro"), dict):
                data = {**data, "metrics": list(data["micro"])}
        return data


class Aggregate(RecordModel):
    micro: GroupStats
    macro: MacroStats


class ModelsSeen(RecordModel):
    editor: list[str]
    judge: list[str]
    protocol_hash: list[str]


class JobCounts(RecordModel):
    planned: int
    ok: int
    failed_permanent: int
    failed_transient_exhausted: int
    pending: int
    retries: int
    max_attempts: int


class LogIntegrity(RecordModel):
    """What a log holds: records, distinct jobs, ok records beyond one per job (must be 0)."""

    records: int
    jobs: int
    duplicate_ok_records: int
    skipped_lines: int = Field(default=0, description="Damaged or hand-edited lines left out.")


class JudgeUsage(RecordModel):
    """Tokens a remote judge endpoint reported for the scores a report uses, summed."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    questions: int


class JudgeCost(RecordModel):
    """What judging the report's items cost (orchestrator/report/cost.py)."""

    items: int = Field(description="Judge answers the report uses (scored or unscored).")
    device_s_per_item: float | None = Field(
        default=None,
        description="The judge's device time per item (GPU-seconds on a GPU judge): each "
        "item's batch wall time divided by the items in its batch, averaged; None when the "
        "service does not report batches (a remote judge).",
    )
    device_s_total: float | None = None
    items_with_timings: int = 0
    items_per_s: float | None = Field(
        default=None,
        description="Items judged per second of the score phase's wall time (every invocation "
        "that scored for this judge); None when no phase time was recorded.",
    )
    score_wall_s: float | None = None
    tokens_total: int | None = Field(
        default=None, description="Tokens an OpenAI-compatible judge reported (None: local)."
    )
    tokens_per_item: float | None = None


class Summary(RecordModel):
    """summary.json's body, without the run's provenance (which the report adds). Written by
    report/build.py (``dump``), read by RunStore.read_summary; every older shape reads."""

    schema_version: int = Field(default=SUMMARY_SCHEMA, alias="schema")
    metric_set: MetricSet = Field(
        default_factory=MetricSet.legacy,
        description="The run's metrics (names, labels, rules), headline and scale: its protocol's.",
    )
    definitions: dict[str, str]
    categories: dict[str, GroupStats]
    overall: Aggregate
    languages: dict[str, Aggregate] | None = Field(
        default=None, description="Per instruction language, when there is more than one."
    )
    reporting: Reporting = Field(default_factory=Reporting)
    tables: list[DeclaredTable] = Field(
        default_factory=list, description="The benchmark's declared tables (report/breakdown.py)."
    )
    official: OfficialStatistics | None = Field(
        default=None,
        description="The benchmark's official tables and headline, as its authors' script "
        "computes them (reporting.statistics; benchmarks/statistics.py).",
    )
    models: ModelsSeen
    jobs: dict[str, JobCounts] = Field(
        default_factory=dict, description="Per phase (files before 5e764a8 have none)."
    )
    judge_usage: JudgeUsage | None = Field(
        default=None, description="None for a local judge (no endpoint reports tokens)."
    )
    judge_cost: JudgeCost | None = Field(
        default=None, description="Judge device time, throughput and tokens of these scores."
    )
    judge: dict[str, Any] | None = Field(
        default=None, description="The judge chosen with --judge (None: the run's own scores)."
    )
    judges: list[dict[str, Any]] = Field(
        default_factory=list, description="Every judge that scored the run (rescore adds more)."
    )
    warnings: list[str]
    left_out: list[LeftOutValue] = Field(
        default_factory=list, description="Metric values left out of every mean, and why."
    )
    integrity: dict[str, LogIntegrity] | None = None
    handovers: list[dict[str, Any]] = Field(default_factory=list)
    run: dict[str, Any] | None = Field(
        default=None, description="The run's benchmark, settings and times (from provenance)."
    )

    def dump(self) -> dict[str, Any]:
        data = {
            "schema": SUMMARY_SCHEMA,
            **self.model_dump(mode="json", exclude={"schema_version"}),
        }
        for key in ("languages", "integrity", "run", "official"):
            if data[key] is None:
                del data[key]
        return data
