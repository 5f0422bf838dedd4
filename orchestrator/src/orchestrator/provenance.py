"""What made a run, typed: software versions, settings, benchmark, services and models, and when.

provenance.json is rewritten (atomically) at the start and end of every invocation; each
invocation is appended to its ``invocations`` list, so a resumed run keeps its whole history;
``editbench rescore`` appends to ``rescores``. It is read and written only through
``RunStore.read_provenance``/``write_provenance`` as a `Provenance`.

Every shape older editbench wrote reads (schema 0: no ``schema`` key; the keys it grew later,
``handovers``, ``endpoints``, ``rescores``, ``score_wall_s``, are optional). Keys this version does
not know are kept (``extra="allow"``) so a rewrite never loses what a newer editbench or a person
put there. A part that is not what editbench writes (a list edited into a number, a count into a
word) is left out with a warning naming the file and the part, never a traceback; the rest reads.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import __version__
from shared_schemas import ProtocolInfo

logger = logging.getLogger(__name__)

# 0: files written before the schema key (read as they are); 1: this layout, typed.
PROVENANCE_SCHEMA = 1

PACKAGES = (
    "editbench-orchestrator",
    "editbench-shared-schemas",
    "httpx",
    "pydantic",
    "tenacity",
    "pillow",
    "pyarrow",
    "typer",
    "rich",
    "jinja2",
)


class ProvenancePart(BaseModel):
    """Base of provenance.json's parts: mutable while a run fills them in; unknown keys kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class SoftwareInfo(ProvenancePart):
    """The editbench that ran an invocation, and where."""

    version: str | None = None
    python: str | None = None
    platform: str | None = None
    host: str | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    argv: list[str] = Field(default_factory=list)


class BenchmarkInfo(ProvenancePart):
    """The benchmark of the latest invocation, and how many of its items it selected."""

    name: str | None = None
    path: str | None = None
    format: str | None = None
    items: int | None = None
    selected: int | None = None
    categories: list[str] = Field(default_factory=list)
    fingerprint: str | None = Field(default=None, description="sha256 of the metadata.")


class SettingsRecord(ProvenancePart):
    """The latest invocation's RunSettings (API keys never): the fields readers use are typed,
    the others kept as written."""

    steps: int | None = None
    cfg: float | None = None
    params: dict[str, float] = Field(default_factory=dict)
    negative_prompt: str | None = None
    seed_policy: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    protocol: str | None = None
    mode: str | None = None
    max_new_tokens: int | None = None


class PhaseCountsRecord(ProvenancePart):
    """What one phase did in one invocation. The phases count in it as they run
    (orchestrator.phases.PhaseCounts is this class): one declaration of the counts."""

    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    unscored: int = 0
    missing_edit: int = 0
    retries: int = 0
    requests: int = 0


class Invocation(ProvenancePart):
    """One ``editbench run`` on the folder (a resume is another)."""

    started_at: str | None = None
    phase: str | None = None
    selected: int | None = None
    edit: PhaseCountsRecord | None = None
    score: PhaseCountsRecord | None = None
    score_wall_s: float | None = Field(
        default=None, description="Wall time of the score phase (judge cost's items per second)."
    )
    finished_at: str | None = None


class ModelRef(ProvenancePart):
    """A model as a service described it (shared_schemas.ModelInfo; other fields kept)."""

    id: str | None = None
    revision: str | None = None

    @property
    def name(self) -> str | None:
        """``id@revision``, as records name models."""
        if self.id is None:
            return None
        return f"{self.id}@{self.revision}" if self.revision else self.id


class EndpointRecord(ProvenancePart):
    """One endpoint of a service given several (orchestrator.endpoints.balancing)."""

    url: str | None = None
    given: str | None = None
    state: str | None = None
    weight: int | None = None
    jobs_ok: int = 0
    jobs_failed: int = 0
    set_aside: int = 0
    model: dict[str, Any] | None = None
    last_error: str | None = None


class ServiceRecord(ProvenancePart):
    """A service the run used: where, its /v1/info (kept whole), and per endpoint what it did."""

    url: str | list[str] | None = None
    version: str | None = None
    model: ModelRef | None = None
    endpoints: list[EndpointRecord] | None = None
    models: list[dict[str, Any]] | None = None


class Services(ProvenancePart):
    editor: ServiceRecord | None = None
    reward: ServiceRecord | None = None
    protocol: ProtocolInfo | None = Field(
        default=None, description="The judge protocol's description (its metrics) when scored."
    )


class HandoverRecord(ProvenancePart):
    """One GPU hand-over (orchestrator.handover.Handover), in the invocation that made it."""

    source: str | None = Field(default=None, alias="from")
    target: str | None = Field(default=None, alias="to")
    release_s: float | None = None
    load_s: float | None = None
    wall_s: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    released: bool | None = None
    loaded: bool | None = None
    invocation: int | None = None


class JudgeRecord(ProvenancePart):
    """A judge's identity as orchestrator.judges.JudgeId.describe() writes it."""

    label: str | None = None
    model: str | None = None
    protocol: str | None = None
    protocol_hash: str | None = None
    mode: str | None = None
    slug: str | None = None


class RescoreEntry(ProvenancePart):
    """One ``editbench rescore`` of the run."""

    started_at: str | None = None
    reward_url: str | list[str] | None = None
    protocol: str | None = None
    mode: str | None = None
    max_new_tokens: int | None = None
    reward: ServiceRecord | None = None
    protocol_info: ProtocolInfo | None = None
    protocol_definition: dict[str, Any] | None = Field(
        default=None, description="The protocol's prompts, verbatim (what its hash stands for)."
    )
    score_wall_s: float | None = None
    finished_at: str | None = None
    counts: PhaseCountsRecord | None = None
    judge: JudgeRecord | None = None


class Provenance(ProvenancePart):
    """provenance.json."""

    schema_version: int = Field(default=PROVENANCE_SCHEMA, alias="schema")
    started_at: str | None = None
    finished_at: str | None = None
    editbench: SoftwareInfo | None = None
    benchmark: BenchmarkInfo | None = None
    settings: SettingsRecord | None = None
    invocations: list[Invocation] = Field(default_factory=list)
    services: Services = Field(default_factory=Services)
    handovers: list[HandoverRecord] = Field(default_factory=list)
    rescores: list[RescoreEntry] = Field(default_factory=list)

    @classmethod
    def read(cls, data: Any, path: Path) -> Provenance:
        """``data`` (provenance.json's parsed JSON, None if absent or unreadable) as a model.
        Parts that are not what editbench writes are left out, each with a warning naming
        ``path`` and the part (``invocations.0.score``); anything but an object reads as empty."""
        if data is None:
            return cls(schema_version=0)
        if not isinstance(data, dict):
            logger.warning("%s: not a JSON object; going on without it", path)
            return cls(schema_version=0)
        data = {"schema": 0, **data}
        for _ in range(200):  # each round removes one part: bounded by the file's size
            try:
                return cls.model_validate(data)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = _drop(data, error["loc"], missing=error["type"] == "missing")
                logger.warning(
                    "%s: leaving out %s, which is not what editbench writes (%s)",
                    path,
                    ".".join(str(p) for p in where) or "everything",
                    error["msg"],
                )
                if not where:
                    break
        return cls(schema_version=0)

    def protocol_infos(self) -> list[ProtocolInfo]:
        """Every judge protocol description recorded: the run's, then each rescore's."""
        found = [self.services.protocol, *(r.protocol_info for r in self.rescores)]
        return [info for info in found if info is not None]

    def benchmark_name(self) -> str | None:
        return None if self.benchmark is None else self.benchmark.name

    def setting(self, name: str) -> Any:
        """A setting of the latest invocation as written (None: absent)."""
        if self.settings is None:
            return None
        return self.settings.model_dump(mode="json").get(name)


def _drop(data: Any, loc: tuple[int | str, ...], *, missing: bool) -> tuple[int | str, ...]:
    """Remove the part of ``data`` at ``loc`` (a missing field: the object that needs it) and
    return where it was; () when nothing could be removed."""
    path = [p for p in loc if not (isinstance(p, str) and ("[" in p or p[:1].isupper()))]
    if missing:
        path = path[:-1]
    while path:
        parent: Any = data
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        last = path[-1]
        if isinstance(parent, dict) and last in parent:
            del parent[last]
            return tuple(path)
        if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
            del parent[last]
            return tuple(path)
        path = path[:-1]
    return ()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def software() -> SoftwareInfo:
    return SoftwareInfo(
        version=__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        host=socket.gethostname(),
        packages=package_versions(),
        argv=list(sys.argv),
    )
