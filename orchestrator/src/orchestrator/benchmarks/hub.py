"""Benchmarks named by their Hugging Face hub dataset id, found in the local hub cache.

``--benchmark stepfun-ai/GEdit-Bench`` (or ``owner/name@revision``) reads the dataset's snapshot
from the local Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``, huggingface_hub's own layout,
resolved by huggingface_hub itself with ``local_files_only``): editbench never downloads. A
dataset that is not in the cache is a clear error naming the command that fetches it.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.benchmarks.items import BenchmarkError

# owner/name[@revision]: hub ids are letters, digits, '-', '_', '.'; one slash.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*)(?:@(?P<rev>[\w.\-/]+))?$")


def is_hub_id(spec: str | Path) -> bool:
    """``owner/name`` (optionally ``@revision``) that is not an existing local path."""
    text = str(spec)
    if not _HUB_ID.match(text) or text.startswith((".", "~")):
        return False
    return not Path(text).expanduser().exists()


def download_command(repo_id: str, revision: str | None = None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id} --repo-type dataset{rev}"


def resolve_hub_dataset(spec: str) -> Path:
    """The local snapshot folder of a hub dataset id, from the Hugging Face cache only."""
    match = _HUB_ID.match(spec)
    if match is None:
        raise BenchmarkError(f"{spec!r} is not a hub dataset id (owner/name[@revision])")
    repo_id, revision = match.group("repo"), match.group("rev")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - a pinned dependency of the orchestrator
        raise BenchmarkError(
            f"{spec}: reading hub datasets needs huggingface_hub (pip install huggingface_hub)"
        ) from None
    try:
        folder = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, local_files_only=True
        )
    except LocalEntryNotFoundError:
        raise BenchmarkError(
            f"benchmark {spec!r} is neither a local path nor in the Hugging Face cache; "
            f"editbench does not download. Fetch it first:\n  {download_command(repo_id, revision)}"
            "\n(or pass the folder it is in with --benchmark PATH)"
        ) from None
    except (HFValidationError, ValueError, OSError) as exc:
        raise BenchmarkError(
            f"benchmark {spec!r}: cannot read it from the hub cache: {exc}"
        ) from None
    return Path(str(folder))
