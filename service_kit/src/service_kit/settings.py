"""Settings both services share. Subclasses set the environment prefix (EDITOR_, REWARD_).

Only a service's ``__main__`` reads the environment and command line (``load_settings``); tests
construct settings directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    NoDecode,
    SettingsConfigDict,
)

from service_kit.models.devices import normalize_device, resolve_devices
from service_kit.models.refusals import refused_at_start
from service_kit.replicas.processes import RestartPolicy
from service_kit.replicas.replica_set import ReplicaConfig

LogLevel = Literal["debug", "info", "warning", "error"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]


def default_cache_dir() -> Path:
    """Where built tiny models live; HF_HOME-style override through the settings."""
    return Path.home() / ".cache" / "editbench"


def split_list(value: object) -> object:
    """Accept ``a,b,c`` (and JSON-style lists from Python) for list settings."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        # Flags, when a service's __main__ parses the command line: --max-body-mb, --compile.
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: LogLevel = "info"
    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Folder for locally built tiny models."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted on every route but /health, /ready and /metrics "
        "(comma-separated). Empty: no authentication.",
    )
    max_body_mb: float = Field(default=64.0, gt=0, description="Largest request body accepted.")
    max_image_pixels: int = Field(
        default=4096 * 4096, gt=0, description="Largest image accepted, checked from its header."
    )
    queue_capacity: int = Field(default=16, ge=1, description="Jobs that may wait to run.")
    request_timeout_s: float = Field(
        default=900.0, gt=0, description="A job still waiting after this long is refused (504)."
    )
    drain_timeout_s: float = Field(
        default=120.0,
        ge=0,
        description="On SIGTERM, how long jobs already admitted (running or queued) may take to "
        "finish; /ready says 503 and new jobs are refused meanwhile. Then the process exits 0.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection whose request headers are not complete this long after it "
        "opened (or after the first byte of a further request) is answered 408 and closed.",
    )
    body_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A request whose body has not all arrived this long after its headers is "
        "answered 408 and closed (a deadline: 64 MiB needs about 4.5 Mbit/s).",
    )
    write_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A client that reads nothing of its answer for this long (the server's "
        "send buffer stays full) has its connection aborted, freeing the answer it holds.",
    )
    max_unread_answers_mb: float = Field(
        default=256.0,
        gt=0,
        description="Answers waiting for clients that do not keep up with them, all connections "
        "together: beyond this, the connection stalled longest is aborted (a memory bound).",
    )
    max_worker_restarts: int = Field(
        default=5,
        ge=0,
        description="A worker that exits more often than this within restart_window_s is given "
        "up on, and the service reports not ready.",
    )
    restart_window_s: float = Field(default=300.0, gt=0)
    exit_when_failed: bool = Field(
        default=True,
        description="Exit (code 75) once every worker has been given up on, so that a restart "
        "policy (Compose's restart: unless-stopped) starts the service afresh; code 78 "
        "(EX_CONFIG) instead when at least one of them was given up because its model load was "
        "refused for its configuration (a restart will not help). Off: stay up, not ready.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Never fail open: keys given (a variable, a secret file, a flag) that hold no key
        once split and stripped (`` , ``, blanks, an empty file) are a start-up error."""
        given = isinstance(value, str) or (isinstance(value, list | tuple) and len(value) > 0)
        keys = split_list(value)
        if isinstance(keys, list | tuple):
            keys = [k.strip() if isinstance(k, str) else k for k in keys]
            keys = [k for k in keys if not (isinstance(k, str) and not k)]
            if given and not keys:
                raise ValueError(
                    "API keys are set but hold no key after parsing (only commas or blanks): "
                    "set at least one key, or unset the variable (and remove its secret file) "
                    "to run without authentication"
                )
        return keys

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


class ModelServiceSettings(ServiceSettings):
    """What a service that hosts a model on its replicas adds: which revision, dtype and devices,
    backend options, and whether the model loads at start. Each service names its own
    built-in models and backends, and adds its own options."""

    model: str = Field(
        default="tiny", description="Hugging Face id, a local folder, or a built-in name."
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options for the backend, as JSON (e.g. EDITOR_BACKEND_OPTIONS='{...}', "
        'REWARD_BACKEND_OPTIONS=\'{"attn_implementation": "flash_attention_2"}\').',
    )
    devices: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="One replica (a worker process holding the model) per entry: cuda:N, N or "
        "cpu (comma-separated). Empty: the editor takes every visible GPU, the judge the first; "
        "without a GPU, one CPU replica.",
    )
    dtype: Dtype = Field(default="auto", description="auto: bfloat16 on GPUs, float32 on CPU.")
    load_on_start: bool = Field(
        default=True,
        description="Load the model at start. Off: replicas wait for POST /v1/model/load (one "
        "GPU shared by the editor and the judge).",
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _known_devices(cls, value: object) -> object:
        devices = split_list(value)
        if isinstance(devices, list):
            return [normalize_device(str(d)) for d in devices]
        return devices

    def replica_config(self, name: str, noun: str) -> ReplicaConfig:
        """How the replica set runs the replicas: ``name`` for processes and logs, ``noun`` for
        the model in messages; logging, loading at start and the restart policy from here."""
        return ReplicaConfig(
            name=name,
            noun=noun,
            log_level=self.log_level,
            load_on_start=self.load_on_start,
            policy=RestartPolicy(self.max_worker_restarts, self.restart_window_s),
        )

    def resolve_devices(self) -> list[str]:
        """The replicas' devices: the configured ones, else every visible GPU (a subprocess asks
        torch: the API process never imports it), else one CPU."""
        return resolve_devices(self.devices)


S = TypeVar("S", bound=ServiceSettings)


# Docker and Swarm secrets (and Kubernetes secret volumes mounted there): one file per setting,
# named like its variable (``editor_api_keys``), read when no variable sets it.
SECRETS_DIR = Path("/run/secrets")


def load_settings(
    cls: type[S], prog: str, argv: list[str] | None = None, *, secrets_dir: Path = SECRETS_DIR
) -> S:
    """Command-line flags (``--port 8001 --model tiny``) over environment variables over
    secret files in ``secrets_dir`` (when that folder exists)."""
    source: CliSettingsSource[S] = CliSettingsSource(cls, cli_prog_name=prog)
    parsed = source(args=sys.argv[1:] if argv is None else argv)
    try:
        if secrets_dir.is_dir():
            return cls(_cli_settings_source=parsed, _secrets_dir=secrets_dir)
        return cls(_cli_settings_source=parsed)
    except ValidationError as exc:
        # One line per setting, never the value given (it may be a key), and no traceback.
        prefix = str(cls.model_config.get("env_prefix") or "")
        lines = [
            f"  {prefix}{'.'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        message = f"{prog}: cannot start, invalid settings:\n" + "\n".join(lines)
        raise refused_at_start(message) from None
