"""Reading Prometheus text in tests."""

from __future__ import annotations

import httpx


def metric(url: str, name: str) -> float:
    """The value of one sample (``name`` with its labels as rendered), 0 if absent."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
