"""Settings of ``editbench run``: CLI flags > EDITBENCH_* environment > config file > run folder >
defaults.

A config file is TOML (an ``[editbench]`` table or top-level keys) or YAML, named with ``--config``
or EDITBENCH_CONFIG, with the same keys as the fields below (``editor_url = "http://gpu1:8001"``).
The environment is passed in explicitly (the CLI passes ``os.environ``), so tests never touch it.

Settings that define what a job *is* (`IDENTITY`) are saved in the run folder's run.json; a rerun
into that folder reuses them and refuses an explicit value that disagrees, because one folder
must never mix results made with different settings. Everything else (URLs, concurrency,
categories, limits) may change from one invocation to the next.
"""

from __future__ import annotations

import difflib
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from orchestrator import safe_yaml
from orchestrator.benchmarks.hub import is_hub_id
from orchestrator.endpoints.urls import split_urls
from orchestrator.jobs import EditSettings, SeedPolicy

ENV_PREFIX = "EDITBENCH_"
Phase = Literal["edit", "score", "all"]
ScoreModeName = Literal["expected", "generate"]

IDENTITY = (
    "benchmark",
    "split",
    "steps",
    "cfg",
    "params",
    "negative_prompt",
    "seed_policy",
    "seed",
    "width",
    "height",
    "protocol",
    "mode",
    "max_new_tokens",
    "edited_dir",
)
# Identity settings of the judge alone: a run's edits can be scored again with others.
_JUDGE_IDENTITY = ("protocol", "mode", "max_new_tokens")
# What the latest invocation selected: reused by a resume unless given again, never a conflict.
SELECTION = ("categories", "languages", "limit", "limit_per_category")


class ConfigError(ValueError):
    """Settings that cannot be used, with a message that says which and why."""


class RunSettings(BaseModel):
    """Everything an ``editbench run`` needs; units in names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What to run
    benchmark: str | None = Field(default=None, description="Manifest, GEdit-Bench, or 'sample'.")
    split: str | None = None
    out: Path | None = None
    phase: Phase = "all"
    edited_dir: str | None = None
    categories: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)
    limit_per_category: int | None = Field(default=None, ge=1)
    # Services
    editor_url: str = Field(
        default="http://127.0.0.1:8001",
        description="One editor URL or several (comma-separated; a list in a config file).",
    )
    reward_url: str = Field(
        default="http://127.0.0.1:8002",
        description="One judge URL or several (comma-separated; a list in a config file).",
    )
    allow_mixed_revisions: bool = Field(
        default=False,
        description="Let the endpoints of one service serve different model revisions.",
    )
    editor_api: Literal["editbench", "openai"] = Field(
        default="editbench",
        description="What --editor-url speaks: our editor service, or any OpenAI-compatible "
        "images-edit endpoint (URL = its base URL ending in /v1).",
    )
    editor_model: str | None = Field(
        default=None,
        description="--editor-api openai: the model name to send (default: the first of the "
        "endpoint's /v1/models).",
    )
    editor_api_key: SecretStr | None = None
    reward_api_key: SecretStr | None = None
    # Edit parameters; omitted: the editor family's published defaults (its /v1/info)
    steps: int | None = Field(default=None, ge=1, le=200)
    cfg: float | None = Field(default=None, ge=1.0, le=20.0)
    params: dict[str, float] = Field(
        default_factory=dict,
        description="The editor family's own parameters (NAME=VALUE, e.g. guidance_scale=2.5).",
    )
    negative_prompt: str = " "
    seed_policy: SeedPolicy = "per-item"
    seed: int = Field(default=42, ge=0, le=2**63 - 1)
    width: int | None = Field(default=None, ge=16, le=4096, multiple_of=16)
    height: int | None = Field(default=None, ge=16, le=4096, multiple_of=16)
    # Judge
    protocol: str = "viescore"
    mode: ScoreModeName = "expected"
    max_new_tokens: int = Field(default=512, ge=8, le=4096)
    # Execution
    edit_concurrency: int | None = Field(default=None, ge=1)
    score_concurrency: int | None = Field(default=None, ge=1)
    items_per_request: int = Field(default=4, ge=1, le=64)
    retry_failed: bool = False
    job_deadline_s: float = Field(default=1800.0, gt=0)
    request_timeout_s: float = Field(default=900.0, gt=0)
    ready_timeout_s: float = Field(default=600.0, ge=0)
    allow_outside_paths: bool = Field(
        default=False,
        description="Read benchmark images outside the benchmark's folder (absolute paths, "
        "'..' or symlinks that lead out); refused by default.",
    )
    share_gpu: bool = Field(
        default=False,
        description="Editor and judge share one GPU: before each phase the other service "
        "releases its model and this one loads.",
    )

    @field_validator("editor_url", "reward_url", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        """Several URLs: a list (config file) or comma-separated; checked, kept as one string."""
        if isinstance(value, str | list | tuple):
            return ",".join(split_urls(value))
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: object) -> object:
        """``NAME=VALUE`` (repeated, or comma-separated) or a mapping (config file)."""
        parts = [value] if isinstance(value, str) else value
        if not isinstance(parts, list | tuple):
            return value
        found: dict[str, object] = {}
        for part in (p.strip() for item in parts for p in str(item).split(",") if p.strip()):
            name, sep, number = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"param {part!r}: write NAME=VALUE, e.g. guidance_scale=2.5")
            found[name.strip()] = number.strip()
        return found

    @field_validator("categories", "languages", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        """``a,b`` or ``[a, "b,c"]`` (a repeated flag, each comma-separated): one list."""
        parts = [value] if isinstance(value, str) else value
        if isinstance(parts, list | tuple):
            return [p.strip() for part in parts for p in str(part).split(",") if p.strip()]
        return value

    @field_validator("benchmark", mode="before")
    @classmethod
    def _benchmark_path(cls, value: object) -> object:
        """'sample', a hub dataset id (owner/name that is no local path), or a path made
        absolute (from a flag, a variable or a config file alike)."""
        if isinstance(value, str | Path) and is_hub_id(value):
            return str(value)
        if isinstance(value, str | Path) and str(value) not in ("", "sample"):
            return str(Path(value).expanduser().resolve())
        return value

    @field_validator("edited_dir", mode="before")
    @classmethod
    def _absolute_dir(cls, value: object) -> object:
        if isinstance(value, str | Path) and str(value):
            return str(Path(value).expanduser().resolve())
        return value

    def edit_settings(self) -> EditSettings:
        return EditSettings(
            steps=self.steps,
            cfg=self.cfg,
            params=dict(self.params),
            negative_prompt=self.negative_prompt,
            seed_policy=self.seed_policy,
            seed=self.seed,
            width=self.width,
            height=self.height,
        )

    def identity(self) -> dict[str, Any]:
        return {key: _plain(getattr(self, key)) for key in IDENTITY}

    def selection(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SELECTION}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML or YAML config file as a flat dict of settings."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
            data = data.get("editbench", data)
        else:
            data = safe_yaml.safe_load(text) or {}
            if isinstance(data, dict) and isinstance(data.get("editbench"), dict):
                data = data["editbench"]
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


# Keys can come from files (Docker/Swarm secrets, Kubernetes secret volumes):
# EDITBENCH_EDITOR_API_KEY_FILE=/run/secrets/editor_api_keys. The variable itself wins.
SECRET_FILE_FIELDS = ("editor_api_key", "reward_api_key")


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """EDITBENCH_* variables (empty ones ignored) for the fields that exist; the API keys also
    from the file an EDITBENCH_*_API_KEY_FILE variable names."""
    fields = set(RunSettings.model_fields)
    found: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and value != "":
            key = name[len(ENV_PREFIX) :].lower()
            if key in fields:
                found[key] = value
    for key in SECRET_FILE_FIELDS:
        path = environ.get(f"{ENV_PREFIX}{key.upper()}_FILE")
        if key not in found and path:
            try:
                found[key] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{ENV_PREFIX}{key.upper()}_FILE: cannot read {path}: {exc}"
                ) from None
    return found


# Settings whose flag has another name: --size sets width and height.
_FLAG_OF = {"width": "size", "height": "size"}


def resolve_settings(
    cli: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    config_file: Path | None = None,
    saved_identity: Mapping[str, Any] | None = None,
) -> RunSettings:
    """Merge the sources (CLI > env > file > saved run identity > defaults) and validate.

    ``cli`` holds only the flags the user gave. A given identity setting that disagrees with the
    run folder's saved one is a ConfigError naming both values.
    """
    config_path = config_file or (
        Path(environ["EDITBENCH_CONFIG"]) if environ.get("EDITBENCH_CONFIG") else None
    )
    from_file = read_config_file(config_path) if config_path else {}
    unknown = sorted(set(from_file) - set(RunSettings.model_fields))
    if unknown:
        named = []
        for name in unknown:  # a typo is named with the setting it is closest to
            close = difflib.get_close_matches(name, list(RunSettings.model_fields), n=1)
            named.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ConfigError(f"config file {config_path}: unknown setting(s) {', '.join(named)}")
    from_env = env_settings(environ)
    explicit: dict[str, Any] = {**from_file, **from_env, **dict(cli)}
    merged: dict[str, Any] = {**dict(saved_identity or {}), **explicit}

    def given_by(key: str) -> str:
        """Where a setting's value came from, so a refused one can be found and fixed."""
        if key in cli:
            return f" (--{_FLAG_OF.get(key, key).replace('_', '-')})"
        if key in from_env:
            return f" ({ENV_PREFIX}{key.upper()})"
        if key in from_file:
            return f" (config file {config_path})"
        if key in (saved_identity or {}):
            return " (the run folder's run.json)"
        return ""

    try:
        settings = RunSettings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        source = given_by(str(first["loc"][0])) if first["loc"] else ""
        raise ConfigError(f"invalid setting {where}{source}: {first['msg']}") from None
    try:
        settings.edit_settings().check()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"the editor refuses these edit settings: {where}: {first['msg']}"
        ) from None
    _check_key_destinations(settings, explicit, saved_identity or {})
    if saved_identity:
        explicit_settings = RunSettings.model_validate({**dict(saved_identity), **explicit})
        conflicts = [
            f"{key}: the run folder has {saved_identity.get(key)!r}, "
            f"you asked for {explicit_settings.identity()[key]!r}"
            for key in IDENTITY
            if key in explicit
            and key in saved_identity
            and explicit_settings.identity()[key] != saved_identity[key]
        ]
        if conflicts:
            judged = [
                key
                for key in _JUDGE_IDENTITY
                if key in explicit and any(c.startswith(f"{key}:") for c in conflicts)
            ]
            # Commands to paste: this run's folder, judge URL and benchmark, the new values.
            folder = shlex.quote(str(settings.out))
            changed = " ".join(
                f"--{k.replace('_', '-')} {shlex.quote(str(explicit[k]))}" for k in judged
            )
            benchmark = shlex.quote(settings.benchmark or "BENCHMARK")
            hint = (
                "\nTo score this run's edits again in another --"
                + "/--".join(k.replace("_", "-") for k in judged)
                + f", keeping the run's own scores: editbench rescore {folder} --reward-url "
                + f"{shlex.quote(settings.reward_url)} {changed}"
                + "; or a new run on these edits: editbench run --phase score --edited-dir "
                + f"{shlex.quote(str(settings.out) + '/edits')} --benchmark {benchmark} "
                + f"{changed} --out NEW_FOLDER"
                if judged
                else ""
            )
            raise ConfigError(
                "these settings differ from the ones this run folder was made with (use a new "
                "--out for a run with other settings):\n  " + "\n  ".join(conflicts) + hint
            )
    return settings


# Which URL each API key goes to, and the flag that names it.
_KEY_DESTINATIONS = (
    ("editor_api_key", "editor_url", "--editor-url", "the editor"),
    ("reward_api_key", "reward_url", "--reward-url", "the judge"),
)


def _check_key_destinations(
    settings: RunSettings, explicit: Mapping[str, Any], saved: Mapping[str, Any]
) -> None:
    """An API key goes only to URLs the user gave in this invocation (flag, environment,
    config file) or the defaults, never to a URL read from the run folder's run.json, which
    anyone who can write the folder can edit: such a URL must be confirmed by naming it."""
    for key_field, url_field, flag, what in _KEY_DESTINATIONS:
        if getattr(settings, key_field) is None or url_field in explicit:
            continue
        url = getattr(settings, url_field)
        default = RunSettings.model_fields[url_field].default
        if url_field not in saved or url == default:
            continue
        raise ConfigError(
            f"the run folder's run.json names {url} for {what}, and an API key for it is set; "
            f"a key is sent only to URLs given in this invocation: pass {flag} {url} "
            f"(or EDITBENCH_{url_field.upper()}) to confirm it"
        )
