"""Where a service's model comes from: a hub id, a local folder, or a built-in random build.

Shared by both services: parsing the setting, fetching a hub snapshot (into HF_HOME, once), and
naming the exact revision that was loaded, so every result can say which weights produced it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service_kit.models.refusals import ConfigurationRefused

SourceKind = Literal["hub", "local", "tiny", "random-full"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Small files that define a model folder; weights are left out of the hash (tens of GB).
_DEFINING_SUFFIXES = (".json", ".jinja", ".txt", ".model")


@dataclass(frozen=True, slots=True)
class ModelSource:
    kind: SourceKind
    name: str  # as the user wrote it
    variant: str | None = None  # built-ins: which architecture variant (e.g. "edit-plus", "moe")

    @property
    def meaningful(self) -> bool:
        return self.kind in ("hub", "local")


def parse_model_source(value: str, builtins: dict[str, tuple[SourceKind, str]]) -> ModelSource:
    """``builtins`` maps names such as ``tiny`` to (kind, variant); else a folder or a hub id."""
    value = value.strip()
    if value in builtins:
        kind, variant = builtins[value]
        return ModelSource(kind, value, variant)
    path = Path(value).expanduser()
    if path.is_dir():
        return ModelSource("local", str(path.resolve()))
    if value.startswith((".", "/", "~")) or not _HUB_ID.match(value):
        names = ", ".join(sorted(builtins))
        raise ConfigurationRefused(
            f"model {value!r} is not a folder, a Hugging Face id (org/name) or one of: {names}"
        )
    return ModelSource("hub", value)


def hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """Download (or find in HF_HOME) a hub snapshot; the folder is named by its commit.

    A repo or revision the hub does not have (or will not show this token), or one missing from
    the cache while HF_HUB_OFFLINE is set, is refused (ConfigurationRefused): no restart fetches
    it. A hub that cannot be reached is not refused: a later try may reach it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except RevisionNotFoundError:
        raise ConfigurationRefused(
            f"model {repo_id!r} has no revision {revision!r} on the Hugging Face hub: set the "
            "revision setting to a branch, tag or commit it has"
        ) from None
    except RepositoryNotFoundError:  # gated ones too (GatedRepoError)
        raise ConfigurationRefused(
            f"model {repo_id!r} is not on the Hugging Face hub, or is private or gated and the "
            "token (HF_TOKEN) may not read it"
        ) from None
    except LocalEntryNotFoundError as exc:
        if not isinstance(exc.__cause__, OfflineModeIsEnabled):
            raise  # the hub could not be reached: a later try may
        raise ConfigurationRefused(
            f"model {repo_id!r} is not in the model cache (HF_HOME) and HF_HUB_OFFLINE is set: "
            "download it first, or unset HF_HUB_OFFLINE"
        ) from None


def folder_revision(folder: Path, *, include_weights: bool = False) -> str:
    """A short content hash of a model folder's defining files (and weights, if asked)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not include_weights and not path.name.endswith(_DEFINING_SUFFIXES):
            continue
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def snapshot_revision(folder: Path) -> str | None:
    """The commit of a hub snapshot folder (``.../snapshots/<commit>``), if it is one."""
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    return None
