"""Benchmarks the runner reads: manifests (JSONL/CSV/YAML), GEdit-Bench, KRIS-Bench, ImgEdit,
RISEBench (each in its published layout), hub dataset ids, the bundled sample."""

from __future__ import annotations

from pathlib import Path

from orchestrator.benchmarks.base import (
    Benchmark,
    item_relpath,
    normalize_text,
    resolve_inside,
    select_items,
)
from orchestrator.benchmarks.folder import FolderBenchmark
from orchestrator.benchmarks.gedit import GEditBenchmark, is_gedit_path, load_gedit
from orchestrator.benchmarks.hub import is_hub_id, resolve_hub_dataset
from orchestrator.benchmarks.imgedit import (
    find_imgedit_archive,
    find_imgedit_index,
    load_imgedit,
    load_imgedit_archive,
)
from orchestrator.benchmarks.items import BenchmarkError, Item
from orchestrator.benchmarks.kris import find_kris_root, load_kris
from orchestrator.benchmarks.manifest import MANIFEST_SUFFIXES, ManifestBenchmark, load_manifest
from orchestrator.benchmarks.rise import find_rise_index, load_rise
from orchestrator.benchmarks.sample import bundled_sample
from orchestrator.benchmarks.tables import choose_files, detect_table, load_table, parquet_files

__all__ = [
    "Benchmark",
    "BenchmarkError",
    "FolderBenchmark",
    "GEditBenchmark",
    "Item",
    "ManifestBenchmark",
    "is_hub_id",
    "item_relpath",
    "load_benchmark",
    "normalize_text",
    "resolve_benchmark_path",
    "resolve_inside",
    "select_items",
]

_MANIFEST_NAMES = tuple(f"manifest{suffix}" for suffix in MANIFEST_SUFFIXES)


def resolve_benchmark_path(spec: str | Path) -> Path:
    """``sample`` names the bundled sample; ``owner/name`` that is no local path is a hub dataset
    id, read from the local Hugging Face cache; anything else is a path (made absolute)."""
    if str(spec) == "sample":
        return bundled_sample()
    if is_hub_id(spec):
        return resolve_hub_dataset(str(spec))
    return Path(spec).expanduser().resolve()


def load_benchmark(
    spec: str | Path, *, split: str | None = None, allow_outside_paths: bool = False
) -> Benchmark:
    """A manifest file or a folder holding one, GEdit-Bench (parquet / save_to_disk), or a hub
    dataset id found in the local Hugging Face cache.
    Image paths must stay inside the benchmark's folder unless ``allow_outside_paths``."""
    try:
        path = resolve_benchmark_path(spec)
        if str(spec) == "sample":
            sample = load_manifest(path)
            sample.name = "sample"
            return sample
        hub_name = str(spec).split("@")[0].split("/")[-1] if is_hub_id(spec) else None
        benchmark = _load_path(path, split=split, allow_outside_paths=allow_outside_paths)
    except OSError as exc:
        # Whatever a loader did not turn into its own message (a folder this user may not
        # list, a file it may not open): one line naming the file, never a traceback.
        where = exc.filename or spec
        raise BenchmarkError(
            f"{where}: cannot read the benchmark ({exc.strerror or exc}); check that this user "
            "may read the benchmark's folder and every file in it"
        ) from None
    if hub_name is not None:
        benchmark.name = hub_name
    return benchmark


def _load_path(path: Path, *, split: str | None, allow_outside_paths: bool) -> Benchmark:
    if not path.exists():
        raise BenchmarkError(
            f"benchmark not found: {path}; --benchmark takes a manifest (.jsonl, .csv, .yaml), "
            "a folder holding one or a published benchmark's files (GEdit-Bench, KRIS-Bench, "
            "ImgEdit, RISEBench), 'sample', or a hub dataset id (owner/name) in the local cache"
        )
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return load_manifest(path, allow_outside_paths=allow_outside_paths)
    if path.is_dir():
        for name in _MANIFEST_NAMES:
            if (path / name).is_file():
                return load_manifest(path / name, allow_outside_paths=allow_outside_paths)
    if find_kris_root(path) is not None:
        return load_kris(path, allow_outside_paths=allow_outside_paths)
    if find_imgedit_index(path) is not None:
        return load_imgedit(path, allow_outside_paths=allow_outside_paths)
    if find_imgedit_archive(path) is not None:
        return load_imgedit_archive(path, split)
    if find_rise_index(path) is not None:
        return load_rise(path, allow_outside_paths=allow_outside_paths)
    if parquet_files(path):
        # A hub table: which benchmark is told by its columns (tables.py), never by order.
        files = choose_files(path, split)
        layout = detect_table(files)
        if layout is not None:
            return load_table(path, layout, files, allow_outside_paths=allow_outside_paths)
    if is_gedit_path(path):
        return load_gedit(path, split=split, allow_outside_paths=allow_outside_paths)
    raise BenchmarkError(
        f"{path}: not a benchmark: expected a manifest ({', '.join(MANIFEST_SUFFIXES)}), "
        "a folder with manifest.jsonl, GEdit-Bench parquet / save_to_disk files, KRIS-Bench "
        "(<task>/annotation.json, or lmms-eval's parquet), ImgEdit (basic_edit.json / "
        "UGE_edit.json, the hub's Benchmark.tar, or lmms-eval's parquet) or RISEBench "
        "(data_total.json, or the hub's datav2_total_w_subtask.json with data.zip)"
    )
