"""What both services' model loaders share (worker processes only; torch is imported lazily).

Built-in models have random weights of the real architecture, made in place
(``random_weights``): a tiny one is built once and saved (``ensure_built``), a full-size one is
built straight on the GPU. A local folder is used as it is; a hub id is fetched as a snapshot.
Either way the loader gets a folder for its ``from_pretrained`` and the revision that names
exactly what was loaded (``model_folder``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service_kit.models.sources import ModelSource, folder_revision, hub_snapshot, snapshot_revision

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RECIPE_FILE = "editbench_recipe.json"
RANDOM_SEED = 0
RANDOM_REVISION = f"random-init-seed-{RANDOM_SEED}"  # what a random-full model reports


@contextmanager
def random_weights(device: str = "cpu", dtype: torch.dtype | None = None) -> Iterator[None]:
    """Modules built inside get seeded random weights, made directly on ``device`` in ``dtype``
    (float32 by default): a full-size model never passes through host memory."""
    import torch

    torch.manual_seed(RANDOM_SEED)
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous_dtype)


def model_folder(
    source: ModelSource, revision: str | None, tiny: Callable[[], Path]
) -> tuple[Path, str | None]:
    """The folder to load and its revision: a tiny build (``tiny()`` builds it or finds it; its
    revision hashes the weights too), a local folder (its hub commit if it is a snapshot, else a
    hash of its defining files) or a hub snapshot (its commit)."""
    if source.kind == "tiny":
        folder = tiny()
        return folder, folder_revision(folder, include_weights=True)
    if source.kind == "local":
        folder = Path(source.name)
        return folder, snapshot_revision(folder) or folder_revision(folder)
    folder = hub_snapshot(source.name, revision)
    return folder, snapshot_revision(folder) or revision


def ensure_built(
    folder: Path, marker: str, save: Callable[[Path], None], recipe: dict[str, Any]
) -> Path:
    """Build a model folder once: ``save(staging)`` writes the model, ``recipe`` is recorded
    beside it. Later calls (and other processes) find ``folder / marker`` and reuse it.

    The folder is written under a temporary name and renamed into place, under a file lock, so
    processes starting together never see half a model.
    """
    from filelock import FileLock

    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / marker).is_file():
            return folder
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)  # left by a build that was killed
        save(staging)
        (staging / RECIPE_FILE).write_text(json.dumps(recipe))
        staging.rename(folder)
        logger.info("built %s in %s", folder.name, folder)
    return folder
