"""Which devices a service runs on, decided without importing torch in the API process."""

from __future__ import annotations

import logging
import subprocess
import sys

logger = logging.getLogger(__name__)

_COUNT_GPUS = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


def count_visible_gpus(timeout_s: float = 120.0) -> int:
    """GPUs torch can see (honouring CUDA_VISIBLE_DEVICES), asked of a short-lived subprocess."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _COUNT_GPUS],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        logger.warning("could not count GPUs; assuming none", exc_info=True)
        return 0


def normalize_device(name: str) -> str:
    """``0`` and ``cuda`` mean ``cuda:0``; ``cpu`` and ``cuda:N`` stay as they are."""
    name = name.strip().lower()
    if name.isdigit():
        return f"cuda:{name}"
    if name == "cuda":
        return "cuda:0"
    if name == "cpu" or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ValueError(f"unknown device {name!r}; use cpu, cuda:N or N")


def resolve_devices(configured: list[str]) -> list[str]:
    """The configured devices, or every visible GPU, or one CPU."""
    if configured:
        return [normalize_device(d) for d in configured]
    count = count_visible_gpus()
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]
