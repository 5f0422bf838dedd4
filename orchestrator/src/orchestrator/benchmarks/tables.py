"""Benchmarks published on the hub as parquet tables (``datasets``' layout), by their columns.

A hub dataset pushed with ``datasets`` is parquet under ``data/``
(``<split>-00000-of-00001.parquet``, or ``<config>/<split>/*.parquet`` as the hub converts
it); an image column is the ``Image`` feature, a struct ``{bytes, path}``, and a list of images a
list of such structs. Which benchmark a table holds is told by its columns, one layout each
(`TABLE_LAYOUTS`, GEdit's columns), never by the order of checks:

- GEdit-Bench (``stepfun-ai/GEdit-Bench``): read by `gedit.load_gedit`.
- KRIS-Bench as lmms-eval reads it (``wukeming11/kris-bench``; lmms_eval/tasks/kris_bench/
  utils.py @75571cfe): ``ori_images`` (list of images: the inputs, ``doc_to_visual``),
  ``gt_image`` (an image or null: the ground truth), ``category`` (the task folder),
  ``image_id``, ``key`` (``<category>__<image_id>``), ``ins_en``, ``explain_en``, ``ori_img`` /
  ``gt_img`` (the authors' file names; "" when none), as its prepare_dataset.py (@8b95ca86)
  flattened ``KRIS_Bench/<task>/annotation.json``.
- ImgEdit-Bench basic as lmms-eval reads it (``kcz358/imgedit``; lmms_eval/tasks/imgedit/
  utils.py @75571cfe): ``image`` (the input), ``prompt``, ``key``, ``edit_type``.

Items are the same as the authors' layouts give (ids, categories, instructions, hints, every
field the official statistics read); the images come from the table's rows, streamed a few rows
at a time, so memory stays flat however large the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.benchmarks.base import OUTSIDE_HINT, Benchmark, normalize_text, resolve_inside
from orchestrator.benchmarks.folder import INPUT_IMAGES, REFERENCE_IMAGE
from orchestrator.benchmarks.items import JUDGE_VARIANT, BenchmarkError, Item, Problems
from orchestrator.benchmarks.kris import task_fields, temporal_variant
from orchestrator.benchmarks.reporting import IMGEDIT_REPORTING, KRIS_REPORTING, Reporting

if TYPE_CHECKING:  # pyarrow takes a second to import: only table benchmarks pay for it
    import pyarrow as pa

_BATCH_ROWS = 8
# lmms-eval's tasks read the test split (kris_bench.yaml, imgedit.yaml: test_split: test).
DEFAULT_SPLITS = ("test", "train")
_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d+-of-\d+\.parquet$")


@dataclass(frozen=True, slots=True)
class Cell:
    """Where one image of a row lives: a column, and its position when the column is a list."""

    column: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class RowImages:
    source: Cell
    inputs: tuple[Cell, ...] = ()
    reference: Cell | None = None


@dataclass(frozen=True, slots=True)
class TableLayout:
    """One published table layout: the columns that identify it and how a row becomes an item."""

    name: str
    hub_ids: tuple[str, ...]
    required: tuple[str, ...]
    benchmark_name: str
    format: str
    reporting: Reporting
    # (row's metadata, list lengths of list-of-image columns, where) -> item and its images
    build: Callable[[dict[str, Any], dict[str, int], str], tuple[Item, RowImages]]
    # list-of-image column -> the column naming its images, one name each (its length is the
    # number of images, read without reading the images)
    list_columns: dict[str, str] = field(default_factory=dict)


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return value.strip() if isinstance(value, str) else ""


def _kris_row(row: dict[str, Any], lengths: dict[str, int], where: str) -> tuple[Item, RowImages]:
    # lmms-eval kris_bench utils.py: _get_doc_metadata (category, image_id or id), doc_to_text
    # (ins_en), process_results (explain_en, ori_images, gt_image).
    folder = _text(row, "category")
    image_id = _text(row, "image_id") or _text(row, "id")
    instruction = _text(row, "ins_en")
    if not folder or not image_id or not instruction:
        raise BenchmarkError(f"{where}: needs 'category', 'image_id' and 'ins_en'")
    count = lengths.get("ori_images", 0)
    if count < 1:
        raise BenchmarkError(f"{where}: 'ori_images' holds no image")
    names = row.get("ori_img")
    if not (isinstance(names, list) and len(names) == count and all(names)):
        names = [f"ori_images[{n}]" for n in range(count)]
    labels = [f"{folder}/{name}" for name in names]
    extra = task_fields(folder, image_id, where)
    explanation = _text(row, "explain_en")
    if explanation:
        extra["explanation"] = explanation
    if count > 1:
        extra[INPUT_IMAGES] = labels[1:]
    variant = temporal_variant(labels) if extra["task"] == "temporal_prediction" else None
    if variant is not None:  # the kris protocol's frame layout (benchmarks/kris.py)
        extra[JUDGE_VARIANT] = variant
    reference = None
    if row.get("gt_image") is True:  # an image there (_metadata), not a null or a string
        extra[REFERENCE_IMAGE] = f"{folder}/{_text(row, 'gt_img') or 'gt_image'}"
        reference = Cell("gt_image")
    task = extra["task"]
    item = Item(
        id=f"{task}/{normalize_text(image_id)}",
        category=task,
        instruction=instruction,
        source=labels[0],
        hints=extra.get("explanation"),
        extra=extra,
    )
    inputs = tuple(Cell("ori_images", n) for n in range(1, count))
    return item, RowImages(Cell("ori_images", 0), inputs, reference)


def _imgedit_row(
    row: dict[str, Any], _lengths: dict[str, int], where: str
) -> tuple[Item, RowImages]:
    # lmms-eval imgedit utils.py: doc_to_visual (image), doc_to_text (prompt), process_results
    # (key, edit_type). The authors' basic_edit.json keys are the same keys.
    key, prompt, edit_type = _text(row, "key"), _text(row, "prompt"), _text(row, "edit_type")
    if not key or not prompt or not edit_type:
        raise BenchmarkError(f"{where}: needs 'key', 'prompt' and 'edit_type'")
    if row.get("image") is not True:  # _metadata: True where the row has an image
        raise BenchmarkError(f"{where}: no image in column 'image'")
    extra: dict[str, Any] = {"key": key, "suite": "basic"}
    image = _text(row, "id")  # the original's path, where a table keeps basic_edit.json's id
    if image:
        extra["image"] = image
    item = Item(
        id=normalize_text(key),
        category=normalize_text(edit_type),
        instruction=prompt,
        source=image,  # "" -> the row's place (load_table)
        extra=extra,
    )
    return item, RowImages(Cell("image"))


KRIS_TABLE = TableLayout(
    name="KRIS-Bench as lmms-eval reads it",
    hub_ids=("wukeming11/kris-bench",),
    required=("category", "ins_en", "ori_images"),
    benchmark_name="KRIS-Bench",
    format="kris",
    reporting=KRIS_REPORTING,
    build=_kris_row,
    list_columns={"ori_images": "ori_img"},
)
IMGEDIT_TABLE = TableLayout(
    name="ImgEdit-Bench (basic) as lmms-eval reads it",
    hub_ids=("kcz358/imgedit",),
    required=("key", "prompt", "edit_type", "image"),
    benchmark_name="ImgEdit-Basic",
    format="imgedit",
    reporting=IMGEDIT_REPORTING,
    build=_imgedit_row,
)
TABLE_LAYOUTS = (KRIS_TABLE, IMGEDIT_TABLE)
# GEdit-Bench's parquet is read by gedit.py; named here so one message lists every layout.
GEDIT_COLUMNS = ("key", "task_type", "instruction", "input_image")


def parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() == ".parquet" else []
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


def _split_of(file: Path, root: Path) -> str | None:
    match = _SHARD.match(file.name)
    if match:
        return match.group("split")
    if file.parent != root and file.parent.name != "data":
        return file.parent.name  # the hub's converted layout: <config>/<split>/0000.parquet
    return None


def choose_files(path: Path, split: str | None) -> list[Path]:
    """The parquet files of one split: ``split``, else the only one, else test, else train."""
    files = parquet_files(path)
    root = path if path.is_dir() else path.parent
    splits = {f: _split_of(f, root) for f in files}
    named = sorted({s for s in splits.values() if s})
    if split is None and len(named) <= 1:
        return files
    chosen = split or next((s for s in DEFAULT_SPLITS if s in named), None)
    if chosen is None:
        raise BenchmarkError(f"{path}: several splits ({', '.join(named)}); choose one: --split")
    picked = [f for f, s in splits.items() if s == chosen]
    if not picked:
        raise BenchmarkError(f"{path}: no split {chosen!r}; it has {', '.join(named) or 'none'}")
    return picked


def column_names(file: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(file).names)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise BenchmarkError(f"{file}: not a readable parquet file: {exc}") from None


def detect_table(files: Sequence[Path]) -> TableLayout | None:
    """The layout the first file's columns name (None: GEdit-Bench's); a clear error naming
    every known layout when no layout's columns are all there."""
    names = set(column_names(files[0]))
    candidates: list[tuple[str, tuple[str, ...], TableLayout | None]] = [
        ("GEdit-Bench (stepfun-ai/GEdit-Bench)", GEDIT_COLUMNS, None)
    ] + [
        (f"{layout.name} ({', '.join(layout.hub_ids)})", layout.required, layout)
        for layout in TABLE_LAYOUTS
    ]
    matching = [c for c in candidates if all(name in names for name in c[1])]
    if len(matching) == 1:
        return matching[0][2]
    if matching:
        raise BenchmarkError(
            f"{files[0]}: its columns fit several layouts ({'; '.join(m[0] for m in matching)}); "
            "editbench will not guess which benchmark it is"
        )
    layouts = [(label, required) for label, required, _ in candidates]
    known = [
        f"{label}: missing column(s) {', '.join(c for c in required if c not in names)}"
        for label, required in layouts
    ]
    raise BenchmarkError(
        f"{files[0]}: a parquet table of no benchmark layout editbench knows (its columns: "
        f"{', '.join(sorted(names))}). The parquet layouts it reads:\n  " + "\n  ".join(known)
    )


def image_bytes(value: Any, root: Path, where: str, *, allow_outside: bool) -> bytes:
    """An ``Image`` feature's value: its bytes, or the file its ``path`` names under ``root``."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            try:
                candidate = resolve_inside(root, str(value["path"]), allow_outside=allow_outside)
            except ValueError as exc:
                raise BenchmarkError(f"{where}: {exc}; {OUTSIDE_HINT}") from None
            if candidate.is_file():
                return candidate.read_bytes()
    elif isinstance(value, bytes | bytearray):
        return bytes(value)
    raise BenchmarkError(f"{where}: the image has neither bytes nor a readable path")


class TableBenchmark(Benchmark):
    """Items whose images are cells of parquet rows (source, further inputs, a reference)."""

    format = "table"

    def __init__(
        self,
        path: Path,
        items: Sequence[Item],
        rows: dict[str, tuple[int, int, RowImages]],
        files: Sequence[Path],
        *,
        name: str,
        allow_outside_paths: bool = False,
    ) -> None:
        super().__init__(path, items, name=name)
        self._rows = rows  # item id -> (file index, row in file, where its images are)
        self._files = list(files)
        self._root = path if path.is_dir() else path.parent
        self._allow_outside = allow_outside_paths

    def _cell_bytes(self, item: Item, value: Any, cell: Cell) -> bytes:
        where = f"item {item.id!r}: column {cell.column!r}"
        if cell.index is not None:
            if not isinstance(value, list) or cell.index >= len(value):
                raise BenchmarkError(f"{where}: no image at position {cell.index}")
            value = value[cell.index]
            where += f"[{cell.index}]"
        return image_bytes(value, self._root, where, allow_outside=self._allow_outside)

    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        with _readable(self._files):
            yield from self._iter_images(items)

    def _iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        import pyarrow.parquet as pq

        wanted: dict[tuple[int, int], Item] = {}
        for item in items:
            file_index, row, _ = self._rows[item.id]
            wanted[(file_index, row)] = item
        for file_index, file in enumerate(self._files):
            if not any(key[0] == file_index for key in wanted):
                continue
            columns = sorted(
                {self._rows[i.id][2].source.column for k, i in wanted.items() if k[0] == file_index}
            )
            offset = 0
            for batch in pq.ParquetFile(file).iter_batches(batch_size=_BATCH_ROWS, columns=columns):
                for n in range(batch.num_rows):
                    found = wanted.get((file_index, offset + n))
                    if found is not None:
                        cell = self._rows[found.id][2].source
                        value = batch.column(cell.column)[n].as_py()
                        yield found, self._cell_bytes(found, value, cell)
                offset += batch.num_rows

    def _row(self, file_index: int, row: int, columns: list[str]) -> dict[str, Any]:
        """One row's cells, reading only the row group that holds it."""
        with _readable(self._files[file_index : file_index + 1]):
            return self._read_row(file_index, row, columns)

    def _read_row(self, file_index: int, row: int, columns: list[str]) -> dict[str, Any]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self._files[file_index])
        start = 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if row < start + size:
                table = parquet.read_row_group(group, columns=columns)
                values: dict[str, Any] = table.slice(row - start, 1).to_pylist()[0]
                return values
            start += size
        raise BenchmarkError(f"{self._files[file_index]}: no row {row}")

    def input_count(self, item: Item) -> int:
        return 1 + len(self._rows[item.id][2].inputs)

    def input_images(self, item: Item) -> list[bytes]:
        return self.extra_images(item).get(INPUT_IMAGES, [])

    def reference_image(self, item: Item) -> bytes | None:
        found = self.extra_images(item).get(REFERENCE_IMAGE)
        return found[0] if found else None

    def extra_images(self, item: Item) -> dict[str, list[bytes]]:
        """The item's further images by role, as `FolderBenchmark.extra_images` gives them:
        ``input_images`` (more inputs, in order) and ``reference_image``."""
        file_index, row, images = self._rows[item.id]
        extra_cells = images.inputs + ((images.reference,) if images.reference else ())
        if not extra_cells:
            return {}
        values = self._row(file_index, row, sorted({c.column for c in extra_cells}))
        found: dict[str, list[bytes]] = {}
        if images.inputs:
            found[INPUT_IMAGES] = [
                self._cell_bytes(item, values[c.column], c) for c in images.inputs
            ]
        if images.reference is not None:
            cell = images.reference
            found[REFERENCE_IMAGE] = [self._cell_bytes(item, values[cell.column], cell)]
        return found


@contextmanager
def _readable(files: Sequence[Path]) -> Iterator[None]:
    """pyarrow's errors on a damaged file (ArrowInvalid is a ValueError, its IO errors are
    OSErrors) and a file gone since loading, as a BenchmarkError: a message, not a traceback."""
    try:
        yield
    except BenchmarkError:
        raise
    except (OSError, ValueError) as exc:
        names = ", ".join(str(f) for f in files)
        raise BenchmarkError(
            f"{names}: cannot read the images ({type(exc).__name__}: {exc}); "
            "the file is damaged: download it again"
        ) from None


def _list_lengths(file: Path, columns: Sequence[str]) -> dict[str, list[int]]:
    """Per row, how many images each list column holds (streamed: the bytes are not kept)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    lengths: dict[str, list[int]] = {c: [] for c in columns}
    if not columns:
        return lengths
    for batch in pq.ParquetFile(file).iter_batches(batch_size=_BATCH_ROWS, columns=list(columns)):
        for column in columns:
            counts = pc.list_value_length(batch.column(column)).to_pylist()
            lengths[column] += [int(c or 0) for c in counts]
    return lengths


def _metadata(file: Path) -> list[dict[str, Any]]:
    """Every column but the image ones; a single-image column only says whether the row has
    one (True or None), read a few rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(file)
    plain = [f.name for f in schema if not _is_image_type(f.type)]
    rows: list[dict[str, Any]] = pq.read_table(file, columns=plain).to_pylist()
    for column in schema:
        kind = column.type
        if not _is_image_type(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
            continue
        present: list[bool] = []
        for batch in pq.ParquetFile(file).iter_batches(
            batch_size=_BATCH_ROWS, columns=[column.name]
        ):
            present += [bool(v) for v in batch.column(0).is_valid().to_pylist()]
        for row, flag in zip(rows, present, strict=True):
            row[column.name] = True if flag else None
    return rows


def _is_image_type(kind: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    return pa.types.is_struct(kind) and {kind.field(i).name for i in range(kind.num_fields)} == {
        "bytes",
        "path",
    }


def load_table(
    path: Path,
    layout: TableLayout,
    files: Sequence[Path],
    *,
    allow_outside_paths: bool = False,
) -> TableBenchmark:
    items: list[Item] = []
    rows: dict[str, tuple[int, int, RowImages]] = {}
    problems = Problems()
    for file_index, file in enumerate(files):
        names = set(column_names(file))
        missing = [c for c in layout.required if c not in names]
        if missing:
            raise BenchmarkError(
                f"{file}: not {layout.name}: missing column(s) {', '.join(missing)}"
            )
        try:
            metadata = _metadata(file)
            lengths: dict[str, list[int]] = {}
            for column, named_by in layout.list_columns.items():
                counted = [row.get(named_by) for row in metadata]
                if all(isinstance(n, list) for n in counted):
                    lengths[column] = [len(n) for n in counted if isinstance(n, list)]
            lengths |= _list_lengths(file, [c for c in layout.list_columns if c not in lengths])
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise BenchmarkError(
                f"{file}: not a readable parquet file ({type(exc).__name__}: {exc}); "
                "download it again"
            ) from None
        for row_index, row in enumerate(metadata):
            where = f"{file.name}: row {row_index}"
            counts = {c: values[row_index] for c, values in lengths.items()}
            with problems.collect():
                item, images = layout.build(row, counts, where)
                if not item.source:
                    item = replace(item, source=f"{file.name}#{row_index}")
                items.append(item)
                rows[item.id] = (file_index, row_index, images)
    problems.raise_if_any(path)
    if not items:
        raise BenchmarkError(f"{path}: no rows")
    benchmark = TableBenchmark(
        path,
        items,
        rows,
        files,
        name=layout.benchmark_name,
        allow_outside_paths=allow_outside_paths,
    )
    benchmark.format = layout.format
    benchmark.reporting = layout.reporting
    return benchmark
