"""Benchmarks the runner reads: manifests in three formats, GEdit-Bench parquet and Arrow."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.benchmarks import BenchmarkError, load_benchmark, select_items
from orchestrator.benchmarks.sample import ITEMS, bundled_sample, render
from tests.orchestrator.conftest import write_manifest
from tests.support.images import image_bytes

ROWS = [
    {
        "id": "p1",
        "category": "物理",
        "instruction": "让球落地",
        "language": "zh",
        "hints": "the ball rests on the ground",
    },
    {"id": "c1", "category": "color", "instruction": "make it red", "language": "en"},
    {"id": "c2", "category": "color", "instruction": "make it blue", "language": "en"},
]


def test_jsonl_manifest_reads_items_and_streams_their_images(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [dict(r) for r in ROWS])
    bench = load_benchmark(manifest)
    assert bench.format == "manifest"
    assert [i.id for i in bench.items] == ["p1", "c1", "c2"]
    first = bench.items[0]
    assert (first.category, first.language, first.hints) == ("物理", "zh", ROWS[0]["hints"])
    images = {item.id: data for item, data in bench.iter_images(bench.items)}
    assert images["c1"] == (tmp_path / "images" / "1.png").read_bytes()


def test_csv_and_yaml_manifests_read_the_same_items(tmp_path: Path) -> None:
    jsonl = load_benchmark(write_manifest(tmp_path, [dict(r) for r in ROWS]))
    header = "id,category,instruction,image,language,hints\n"
    lines = "".join(
        f"{r['id']},{r['category']},{r['instruction']},images/{n}.png,{r['language']},"
        f'"{r.get("hints", "")}"\n'
        for n, r in enumerate(ROWS)
    )
    (tmp_path / "m.csv").write_text(header + lines, encoding="utf-8")
    yaml_text = "items:\n" + "".join(
        f"  - {{id: {r['id']}, category: {r['category']}, instruction: {r['instruction']}, "
        f"image: images/{n}.png, language: {r['language']}}}\n"
        for n, r in enumerate(ROWS)
    )
    (tmp_path / "m.yaml").write_text(yaml_text, encoding="utf-8")
    for name in ("m.csv", "m.yaml"):
        other = load_benchmark(tmp_path / name)
        assert [(i.id, i.category, i.instruction) for i in other.items] == [
            (i.id, i.category, i.instruction) for i in jsonl.items
        ]


def test_manifest_errors_name_the_line(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [dict(r) for r in ROWS])
    text = manifest.read_text(encoding="utf-8") + '{"id": "x", "category": "c"}\n'
    manifest.write_text(text, encoding="utf-8")
    with pytest.raises(
        BenchmarkError, match=r"manifest.jsonl:4: missing required field 'instruction'"
    ):
        load_benchmark(manifest)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    rows = [dict(ROWS[1]), dict(ROWS[1])]
    with pytest.raises(BenchmarkError, match="appears more than once"):
        load_benchmark(write_manifest(tmp_path, rows))


def test_missing_image_is_refused_at_load(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [dict(ROWS[1])])
    (tmp_path / "images" / "0.png").unlink()
    with pytest.raises(BenchmarkError, match="image not found"):
        load_benchmark(manifest)


def test_unicode_categories_select_in_either_normal_form(tmp_path: Path) -> None:
    bench = load_benchmark(write_manifest(tmp_path, [dict(r) for r in ROWS]))
    assert [i.id for i in select_items(bench.items, categories=["物理"])] == ["p1"]
    decomposed = unicodedata.normalize("NFD", "café")
    rows = [{"id": "x", "category": "café", "instruction": "i"}]
    other = load_benchmark(write_manifest(tmp_path / "b", rows))
    assert len(select_items(other.items, categories=[decomposed])) == 1


def test_unknown_category_lists_the_known_ones(tmp_path: Path) -> None:
    bench = load_benchmark(write_manifest(tmp_path, [dict(r) for r in ROWS]))
    with pytest.raises(BenchmarkError, match=r"unknown category 化学.*color, 物理"):
        select_items(bench.items, categories=["化学"])


def test_limits_apply_in_benchmark_order(tmp_path: Path) -> None:
    bench = load_benchmark(write_manifest(tmp_path, [dict(r) for r in ROWS]))
    assert [i.id for i in select_items(bench.items, limit=2)] == ["p1", "c1"]
    assert [i.id for i in select_items(bench.items, limit_per_category=1)] == ["p1", "c1"]
    assert [i.id for i in select_items(bench.items, languages=["en"])] == ["c1", "c2"]


def gedit_table(n_per_lang: int = 3) -> tuple[pa.Table, dict[str, bytes]]:
    """GEdit-Bench's columns, with the image as its {bytes, path} struct."""
    rows, images = [], {}
    for lang in ("en", "cn"):
        for index in range(n_per_lang):
            task = ["background_change", "物理"][index % 2]
            data = image_bytes(24, 24, seed=index + (10 if lang == "cn" else 0))
            key = f"k{index:03d}"
            images[f"{task}/{lang}/{key}"] = data
            rows.append(
                {
                    "key": key,
                    "task_type": task,
                    "instruction": f"{lang} instruction {index}",
                    "instruction_language": lang,
                    "intersection_exist": index == 0,
                    "input_image": {"bytes": data, "path": None},
                }
            )
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("task_type", pa.string()),
            ("instruction", pa.string()),
            ("instruction_language", pa.string()),
            ("intersection_exist", pa.bool_()),
            ("input_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema), images


def test_gedit_parquet_loads_with_gedit_ids_and_streams_images(tmp_path: Path) -> None:
    table, images = gedit_table()
    data = tmp_path / "GEdit-Bench" / "data"
    data.mkdir(parents=True)
    pq.write_table(table.slice(0, 4), data / "train-00000-of-00002.parquet", row_group_size=2)
    pq.write_table(table.slice(4), data / "train-00001-of-00002.parquet")
    bench = load_benchmark(tmp_path / "GEdit-Bench")
    assert bench.format == "gedit"
    assert len(bench.items) == 6
    assert bench.categories == ["background_change", "物理"]
    item = bench.items[0]
    assert item.id == "background_change/en/k000" and item.language == "en"
    assert item.extra["Intersection_exist"] is True  # the published name
    chosen = select_items(bench.items, categories=["物理"])
    streamed = {i.id: d for i, d in bench.iter_images(chosen)}
    assert set(streamed) == {i.id for i in chosen}
    assert all(streamed[k] == images[k] for k in streamed)


def test_gedit_save_to_disk_folder_loads_without_datasets(tmp_path: Path) -> None:
    """A DatasetDict saved with save_to_disk: dataset_dict.json, then Arrow stream files."""
    table, images = gedit_table()
    split = tmp_path / "gedit" / "train"
    split.mkdir(parents=True)
    (tmp_path / "gedit" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    files = []
    for n, part in enumerate((table.slice(0, 3), table.slice(3))):
        name = f"data-0000{n}-of-00002.arrow"
        with pa.OSFile(str(split / name), "wb") as sink, pa.ipc.new_stream(sink, part.schema) as w:
            for batch in part.to_batches(max_chunksize=2):
                w.write_batch(batch)
        files.append({"filename": name})
    (split / "state.json").write_text(json.dumps({"_data_files": files, "_split": "train"}))
    (split / "dataset_info.json").write_text(json.dumps({"features": {}}))
    bench = load_benchmark(tmp_path / "gedit")
    assert [i.id for i in bench.items][:2] == ["background_change/en/k000", "物理/en/k001"]
    streamed = {i.id: d for i, d in bench.iter_images(bench.items)}
    assert streamed == images


def test_a_parquet_without_gedit_columns_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1]}), tmp_path / "x.parquet")
    with pytest.raises(BenchmarkError, match="missing column"):
        load_benchmark(tmp_path / "x.parquet")


def test_bundled_sample_is_what_the_generator_draws() -> None:
    bench = load_benchmark("sample")
    assert bench.name == "sample"
    assert bench.categories == ["color", "removal", "物理"]
    assert len(bench.items) == 12
    folder = bundled_sample().parent
    for spec in ITEMS:
        with Image.open(folder / "images" / f"{spec.id}.png") as image:
            shipped = np.asarray(image.convert("RGB"))
        assert np.array_equal(shipped, np.asarray(render(spec)))
