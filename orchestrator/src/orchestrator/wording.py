"""Words for counts on screen: "1 job", "2 jobs", never "1 job(s)"."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``counted(1, "job")`` -> "1 job"; ``counted(3, "item")`` -> "3 items"."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
