"""GEdit-Bench as published: its parquet files, or a ``datasets.save_to_disk`` folder.

Columns: ``key``, ``task_type`` (the category), ``instruction``, ``instruction_language`` (en/cn)
and ``input_image``, an image struct ``{bytes, path}``. Read with pyarrow alone (no ``datasets``).
A save_to_disk folder holds Arrow IPC *stream* files listed in ``state.json`` beside
``dataset_info.json``; a DatasetDict has one such folder per split and a ``dataset_dict.json``.

Item ids are ``task_type/language/key``: GEdit's own scripts save edits at
``fullset/<task_type>/<language>/<key>.png``, so ``--edited-dir .../fullset`` matches as it is.
Images are streamed: metadata columns are read whole (small), the image column one small batch at
a time (parquet) or through a memory map (Arrow), so a 1 GB benchmark never sits in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.benchmarks.base import (
    OUTSIDE_HINT,
    Benchmark,
    normalize_text,
    resolve_inside,
)
from orchestrator.benchmarks.items import BenchmarkError, Item, Problems
from orchestrator.benchmarks.reporting import GEDIT_REPORTING

if TYPE_CHECKING:  # pyarrow takes a second to import: only GEdit-Bench runs pay for it
    import pyarrow as pa

REQUIRED = ("key", "task_type", "instruction", "input_image")
_META = ("key", "task_type", "instruction", "instruction_language")
# The published data spells it with a capital I; GEdit's score CSVs in lower case. Items keep the
# data's name, so the subset reads the same column whatever the layout.
INTERSECTION = "Intersection_exist"
_INTERSECTION_NAMES = (INTERSECTION, "intersection_exist")
_BATCH_ROWS = 8


def is_gedit_path(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in {".parquet", ".arrow"}
    return (
        bool(_parquet_files(path))
        or (path / "state.json").is_file()
        or (path / "dataset_dict.json").is_file()
    )


def _parquet_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BenchmarkError(f"{path}: not valid JSON ({type(exc).__name__})") from None


def _arrow_files(folder: Path) -> list[Path]:
    """The data files of one save_to_disk split, in order (from state.json when present).
    Every one must be a file of the split's folder: state.json cannot send us elsewhere."""
    state = folder / "state.json"
    if not state.is_file():
        return sorted(folder.glob("*.arrow"))
    files = _read_json(state)
    entries = files.get("_data_files") if isinstance(files, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries
    ):
        raise BenchmarkError(f"{state}: '_data_files' must list {{\"filename\": ...}} entries")
    found = []
    for entry in entries:
        try:
            found.append(resolve_inside(folder, entry["filename"]))
        except ValueError as exc:
            raise BenchmarkError(f"{state}: data file: {exc}") from None
    return found


def _split_folder(path: Path, split: str | None) -> Path:
    dict_file = path / "dataset_dict.json"
    if not dict_file.is_file():
        return path
    data = _read_json(dict_file)
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        raise BenchmarkError(f"{dict_file}: 'splits' must be a list of split names")
    chosen = split or ("train" if "train" in splits else splits[0])
    if chosen not in splits:
        raise BenchmarkError(f"{path}: no split {chosen!r}; it has {', '.join(splits)}")
    try:
        return resolve_inside(path, chosen)
    except ValueError as exc:
        raise BenchmarkError(f"{dict_file}: split {chosen!r}: {exc}") from None


class _Source:
    """One data file: how to read its metadata table and stream its image column."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind

    def schema(self) -> pa.Schema:
        with self._readable():
            return self._schema()

    @contextmanager
    def _readable(self) -> Iterator[None]:
        """pyarrow's errors on a missing, truncated or foreign file as one BenchmarkError."""
        try:
            yield
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OS
            if isinstance(exc, BenchmarkError):
                raise
            kind = "parquet" if self.kind == "parquet" else "Arrow stream (save_to_disk)"
            raise BenchmarkError(
                f"{self.path}: not a readable {kind} file ({type(exc).__name__}: {exc})"
            ) from None

    def _schema(self) -> pa.Schema:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.kind == "parquet":
            return pq.read_schema(self.path)
        with pa.memory_map(str(self.path)) as source:
            return pa.ipc.open_stream(source).schema

    def metadata(self, columns: list[str]) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._readable():
            if self.kind == "parquet":
                return pq.read_table(self.path, columns=columns)
            with pa.memory_map(str(self.path)) as source:
                return pa.ipc.open_stream(source).read_all().select(columns)

    def image_batches(self) -> Iterator[pa.Array]:
        with self._readable():
            yield from self._image_batches()

    def _image_batches(self) -> Iterator[pa.Array]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.kind == "parquet":
            parquet = pq.ParquetFile(self.path)
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=["input_image"]):
                yield batch.column(0)
            return
        # Memory-mapped: batches reference the page cache, not the heap.
        with pa.memory_map(str(self.path)) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                yield batch.column(batch.schema.get_field_index("input_image"))


def _flag(value: Any) -> bool:
    """A yes/no cell: a bool, a number, or its text ("false" is no, not a non-empty string)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _cell_text(value: Any) -> str:
    """A metadata cell as text: a string, or a whole number; anything else (null, a list) is
    no text (never the string "None")."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


def _check_image_column(source: _Source, schema: pa.Schema) -> None:
    """``input_image`` is an Image feature (``{bytes, path}``) or raw bytes, and no row lacks
    it: found at loading, before any edit, instead of at that row's turn mid-run."""
    import pyarrow as pa

    kind = schema.field("input_image").type
    fields = (
        {kind.field(i).name for i in range(kind.num_fields)} if pa.types.is_struct(kind) else set()
    )
    is_image = "bytes" in fields
    if not (is_image or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise BenchmarkError(
            f"{source.path}: column input_image holds {kind}, not images ({{bytes, path}})"
        )
    missing: list[int] = []
    row = 0
    for column in source.image_batches():
        missing += [row + n for n, has in enumerate(_has_image(column)) if not has]
        row += len(column)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise BenchmarkError(
            f"{source.path}: {len(missing)} row(s) without an input_image (rows {shown})"
        )


def _has_image(column: pa.Array) -> list[bool]:
    """Per row: a non-null cell with bytes, or (an Image struct) with bytes or a path; counted
    by pyarrow, without copying the images into Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def given(values: pa.Array) -> pa.Array:
        if pa.types.is_null(values.type):  # a field no row fills (typed null by pyarrow)
            return pa.array([False] * len(values))
        return pc.fill_null(pc.greater(pc.binary_length(values), 0), False)

    if not pa.types.is_struct(column.type):
        return [bool(v) for v in given(column).to_pylist()]
    present = given(pc.struct_field(column, "bytes"))
    if column.type.get_field_index("path") >= 0:
        present = pc.or_(present, given(pc.struct_field(column, "path")))
    present = pc.and_(present, column.is_valid())
    return [bool(v) for v in present.to_pylist()]


class GEditBenchmark(Benchmark):
    format = "gedit"

    def __init__(
        self,
        path: Path,
        items: list[Item],
        rows: dict[str, tuple[int, int]],
        sources: list[_Source],
        *,
        allow_outside_paths: bool = False,
    ) -> None:
        super().__init__(path, items)
        self.reporting = GEDIT_REPORTING
        self._rows = rows  # item id -> (source index, row within source)
        self._sources = sources
        self._allow_outside = allow_outside_paths

    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        wanted: dict[tuple[int, int], Item] = {self._rows[item.id]: item for item in items}
        remaining = len(wanted)
        for index, source in enumerate(self._sources):
            if remaining == 0:
                return
            if not any(key[0] == index for key in wanted):
                continue
            row = 0
            for column in source.image_batches():
                for offset in range(len(column)):
                    item = wanted.get((index, row + offset))
                    if item is not None:
                        yield item, self._image_bytes(item, column[offset].as_py())
                        remaining -= 1
                row += len(column)

    def _image_bytes(self, item: Item, value: Any) -> bytes:
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            if value.get("path"):
                root = self.path if self.path.is_dir() else self.path.parent
                try:
                    candidate = resolve_inside(
                        root, str(value["path"]), allow_outside=self._allow_outside
                    )
                except ValueError as exc:
                    raise BenchmarkError(f"item {item.id!r}: {exc}; {OUTSIDE_HINT}") from None
                if candidate.is_file():
                    return candidate.read_bytes()
        elif isinstance(value, bytes | bytearray):
            return bytes(value)
        raise BenchmarkError(f"item {item.id!r}: input_image has neither bytes nor a readable path")


def load_gedit(
    path: Path, split: str | None = None, *, allow_outside_paths: bool = False
) -> GEditBenchmark:
    """Load a GEdit-Bench parquet file or folder, or a save_to_disk folder."""
    if path.is_file():
        kind = "parquet" if path.suffix.lower() == ".parquet" else "arrow"
        sources = [_Source(path, kind)]
    elif _parquet_files(path):
        sources = [_Source(p, "parquet") for p in _parquet_files(path)]
    else:
        folder = _split_folder(path, split)
        sources = [_Source(p, "arrow") for p in _arrow_files(folder)]
    if not sources:
        raise BenchmarkError(f"{path}: no parquet or arrow files found")
    items: list[Item] = []
    rows: dict[str, tuple[int, int]] = {}
    problems = Problems()
    for index, source in enumerate(sources):
        try:
            schema = source.schema()
            missing = [c for c in REQUIRED if c not in schema.names]
            if missing:
                raise BenchmarkError(
                    f"{source.path}: not GEdit-Bench: missing column(s) {', '.join(missing)}"
                )
            _check_image_column(source, schema)
            intersection = next((c for c in _INTERSECTION_NAMES if c in schema.names), None)
            columns = [c for c in (*_META, intersection) if c and c in schema.names]
            table = source.metadata(columns).to_pylist()
        except BenchmarkError as exc:
            problems.add(str(exc))
            continue
        for row_index, row in enumerate(table):
            where = f"{source.path.name}: row {row_index}"
            blank = [c for c in REQUIRED[:3] if not _cell_text(row.get(c))]
            if blank:
                problems.add(f"{where}: no text in column(s) {', '.join(blank)}")
                continue
            language = (
                normalize_text(_cell_text(row.get("instruction_language")))
                if _cell_text(row.get("instruction_language"))
                else None
            )
            category = normalize_text(_cell_text(row["task_type"]))
            key = _cell_text(row["key"])
            item_id = "/".join(part for part in (category, language, key) if part)
            extra: dict[str, Any] = {"key": key}
            if intersection is not None:
                extra[INTERSECTION] = _flag(row[intersection])
            items.append(
                Item(
                    id=item_id,
                    category=category,
                    instruction=str(row["instruction"]).strip(),
                    source=f"{source.path.name}#{row_index}",
                    language=language,
                    extra=extra,
                )
            )
            rows[item_id] = (index, row_index)
    problems.raise_if_any(path, "the files are not GEdit-Bench as published; download them again")
    if not items:
        raise BenchmarkError(f"{path}: no rows")
    benchmark = GEditBenchmark(path, items, rows, sources, allow_outside_paths=allow_outside_paths)
    if not any(INTERSECTION in item.extra for item in items):
        benchmark.reporting = GEDIT_REPORTING.model_copy(update={"subsets": {}})
    return benchmark
