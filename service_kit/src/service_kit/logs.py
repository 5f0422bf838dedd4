"""Logging set-up for a service process and its spawned workers (which start unconfigured)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s[%(process)d] %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    # Per-step progress bars from diffusers/transformers are noise in a service log.
    for noisy in ("httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
