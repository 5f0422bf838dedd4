"""Both services as real processes, with the fault fakes at the backend seam, and their jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess

SERVICES = ("editor_service", "reward_service")
FAKES = {
    "editor_service": "tests.support.fault_backends:FaultEditor",
    "reward_service": "tests.support.fault_backends:FaultJudge",
}
PREFIX = {"editor_service": "EDITOR", "reward_service": "REWARD"}
JOB_ROUTE = {"editor_service": "/v1/edits", "reward_service": "/v1/scores"}
_SLOW = {"editor_service": "slow", "reward_service": "fake-slow score=7"}
SOURCE = b64(image_bytes(32, 32, seed=1))
EDITED = b64(image_bytes(32, 32, seed=2))


def service_process(
    module: str, tmp_path: Path, *, options: dict[str, Any] | None = None, **settings: str
) -> ServiceProcess:
    """``python -m <module>`` on one CPU worker with the fault fake; ``settings`` by their
    unprefixed names (``DRAIN_TIMEOUT_S="5"``). Not started yet."""
    prefix = PREFIX[module]
    env = {
        "BACKEND": FAKES[module],
        "BACKEND_OPTIONS": json.dumps(options or {}),
        "DEVICES": "cpu",
        "CACHE_DIR": str(tmp_path / "cache"),
        **settings,
    }
    log = tmp_path / f"{module}.log"
    return ServiceProcess(module, {f"{prefix}_{k}": v for k, v in env.items()}, log)


def job_body(module: str, instruction: str | None = None) -> dict[str, Any]:
    """A job for either service; ``instruction`` steers the fake (torch-oom, ...)."""
    if module == "editor_service":
        return {
            "image": SOURCE,
            "instruction": instruction or "mirror",
            "num_inference_steps": 2,
            "seed": 1,
        }
    item = {"source_image": SOURCE, "edited_image": EDITED, "instruction": instruction or "score=7"}
    return {"items": [item], "protocol": "single"}


def slow_job_body(module: str) -> dict[str, Any]:
    """A job that runs for the fake's ``slow_s``."""
    return job_body(module, _SLOW[module])


def error_type(response: httpx.Response) -> str:
    return str(response.json()["error"]["type"])
