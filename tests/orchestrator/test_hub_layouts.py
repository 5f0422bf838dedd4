"""KRIS-Bench, ImgEdit and RISEBench in their hub layouts (tests/orchestrator/hub_layouts.py:
lmms-eval's parquet tables, RISEBench's JSON + data.zip, KRIS-Bench's own snapshot) load
unchanged through ``--benchmark owner/name`` from a local Hugging Face cache and give the same
items and images as the authors' layouts of the same data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.benchmarks import Benchmark, BenchmarkError, load_benchmark
from orchestrator.benchmarks.archive import ArchiveBenchmark
from orchestrator.benchmarks.tables import TableBenchmark
from tests.orchestrator.hub_layouts import (
    as_blobs,
    write_imgedit_hub,
    write_imgedit_lmms,
    write_kris_hub,
    write_kris_lmms,
    write_rise_hub,
)
from tests.orchestrator.published_layouts import (
    IMGEDIT_BASIC,
    IMGEDIT_UGE,
    KRIS_ROWS,
    write_imgedit,
    write_kris,
    write_rise,
)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder named like the datasets
    return cache


def _images(bench: Benchmark) -> dict[str, tuple[int, list[bytes], bytes | None]]:
    """Every item's images as the runner reads them: how many inputs (without reading them),
    all inputs in order, the reference image."""
    found: dict[str, tuple[int, list[bytes], bytes | None]] = {}
    for item, data in bench.iter_images(bench.items):
        inputs = [data, *bench.input_images(item)]
        assert bench.input_count(item) == len(inputs)
        found[item.id] = (len(inputs), inputs, bench.reference_image(item))
    return found


def _same_items(hub: Benchmark, authors: Benchmark, *, same_source: bool = True) -> None:
    assert hub.format == authors.format
    assert hub.reporting == authors.reporting
    assert sorted(i.id for i in hub.items) == sorted(i.id for i in authors.items)
    theirs = {i.id: i for i in authors.items}
    for item in hub.items:
        other = theirs[item.id]
        assert (item.category, item.instruction, item.hints, item.language) == (
            other.category,
            other.instruction,
            other.hints,
            other.language,
        )
        if same_source:
            assert item.source == other.source
            assert item.extra == other.extra
        else:
            assert {k: v for k, v in item.extra.items() if k != "image"} == {
                k: v for k, v in other.extra.items() if k != "image"
            }
    assert _images(hub) == _images(authors)


def test_lmms_eval_kris_table_gives_the_authors_items(hub_cache: Path, tmp_path: Path) -> None:
    root = write_kris(tmp_path / "authors")
    write_kris_lmms(hub_cache, root)
    hub = load_benchmark("wukeming11/kris-bench")
    assert isinstance(hub, TableBenchmark)
    assert hub.name == "kris-bench" and len(hub.items) == len(KRIS_ROWS)
    _same_items(hub, load_benchmark(root))
    multi = next(i for i in hub.items if i.id == "multi-element_composition/21")
    assert multi.extra["input_images"] == [
        "multi-element_composition/21-2.jpg",
        "multi-element_composition/21-3.jpg",
    ]
    assert multi.extra["knowledge_type"] == "Procedural Knowledge"
    view = next(i for i in hub.items if i.id == "viewpoint_change/3")
    assert hub.reference_image(view) == (root / "viewpoint_change" / "3-gt.jpg").read_bytes()
    assert hub.input_count(multi) == 3 and hub.reference_image(multi) is None


def test_the_kris_fixture_is_what_lmms_evals_reader_sees(hub_cache: Path, tmp_path: Path) -> None:
    """The table reads through ``datasets`` as lmms-eval's task does (doc_to_visual,
    process_results), so the fixture is the layout their code reads, not only ours."""
    import datasets

    root = write_kris(tmp_path / "authors")
    folder = write_kris_lmms(hub_cache, root)
    docs = datasets.load_dataset(str(folder), split="test", cache_dir=str(tmp_path / "ds"))
    doc = next(d for d in docs if d["key"] == "temporal_prediction__4")
    assert [img.convert("RGB").size for img in doc["ori_images"]] == [(24, 24)] * 3
    assert doc["gt_image"] is not None and doc["gt_img"] == "4-4.jpg"
    plain = next(d for d in docs if d["key"] == "color_change__1")
    assert plain["gt_image"] is None and plain["ins_en"] == "color_change instruction 1"


def test_lmms_eval_imgedit_table_gives_the_authors_items(hub_cache: Path, tmp_path: Path) -> None:
    import datasets

    basic = write_imgedit(tmp_path / "authors", "basic")
    folder = write_imgedit_lmms(hub_cache, basic)
    hub = load_benchmark("kcz358/imgedit")
    assert isinstance(hub, TableBenchmark)
    assert [i.id for i in hub.items] == list(IMGEDIT_BASIC)
    # lmms-eval reads no original path: the source names the key, the images are the same
    _same_items(hub, load_benchmark(basic), same_source=False)
    assert hub.reporting.statistics == "imgedit"
    doc = datasets.load_dataset(str(folder), split="test", cache_dir=str(tmp_path / "ds"))[0]
    assert doc["image"].convert("RGB").size == (24, 24) and doc["edit_type"] == "adjust"


def test_risebench_hub_snapshot_reads_its_images_from_data_zip(
    hub_cache: Path, tmp_path: Path
) -> None:
    authors = write_rise(tmp_path / "authors")
    folder = write_rise_hub(hub_cache, authors)
    hub = load_benchmark("PhoenixZ/RISEBench")
    assert isinstance(hub, ArchiveBenchmark)
    assert hub.name == "RISEBench"
    _same_items(hub, load_benchmark(authors))
    assert not (folder / "data").exists()  # the cache is read as it is, never unpacked


def test_risebench_hub_files_unpacked_beside_the_json_load_the_same(tmp_path: Path) -> None:
    import zipfile

    authors = write_rise(tmp_path / "authors")
    folder = write_rise_hub(tmp_path / "cache", authors)
    with zipfile.ZipFile(folder / "data.zip") as archive:
        archive.extractall(folder)
    (folder / "data.zip").unlink()
    _same_items(load_benchmark(folder), load_benchmark(authors))


def test_a_missing_image_in_data_zip_is_named(tmp_path: Path) -> None:
    import zipfile

    authors = write_rise(tmp_path / "authors")
    (authors / "data" / "causal_reasoning_images" / "2.png").unlink()
    folder = write_rise_hub(tmp_path / "cache", authors)
    with zipfile.ZipFile(folder / "data.zip") as archive:
        assert "data/causal_reasoning_images/2.png" not in archive.namelist()
    with pytest.raises(BenchmarkError, match=r"causal_reasoning_2.*not in the archive"):
        load_benchmark(folder)


def test_kris_benchs_own_hub_snapshot_loads_as_its_folder(hub_cache: Path, tmp_path: Path) -> None:
    root = write_kris(tmp_path / "authors")
    write_kris_hub(hub_cache, root)
    _same_items(load_benchmark("Liang0223/KRIS_Bench"), load_benchmark(root))


def test_a_table_of_no_known_layout_names_every_layout(tmp_path: Path) -> None:
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(BenchmarkError) as caught:
        load_benchmark(tmp_path)
    message = str(caught.value)
    for name in ("stepfun-ai/GEdit-Bench", "wukeming11/kris-bench", "kcz358/imgedit"):
        assert name in message
    assert "question" in message  # the columns it found


def test_a_table_matching_two_layouts_is_refused(tmp_path: Path) -> None:
    columns = ["key", "task_type", "instruction", "input_image", "prompt", "edit_type", "image"]
    pq.write_table(pa.table({c: ["x"] for c in columns}), tmp_path / "x.parquet")
    with pytest.raises(BenchmarkError, match="several layouts"):
        load_benchmark(tmp_path)


def test_a_hub_table_with_several_splits_reads_test_unless_told(
    hub_cache: Path, tmp_path: Path
) -> None:
    basic = write_imgedit(tmp_path / "authors", "basic")
    folder = write_imgedit_lmms(hub_cache, basic)
    test_file = folder / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(test_file)
    pq.write_table(table.slice(0, 2), folder / "data" / "train-00000-of-00001.parquet")
    assert len(load_benchmark("kcz358/imgedit").items) == len(IMGEDIT_BASIC)
    assert len(load_benchmark("kcz358/imgedit", split="train").items) == 2
    with pytest.raises(BenchmarkError, match="no split 'dev'; it has test, train"):
        load_benchmark("kcz358/imgedit", split="dev")


def test_an_unknown_kris_task_in_the_table_is_refused(hub_cache: Path, tmp_path: Path) -> None:
    root = write_kris(tmp_path / "authors")
    (root / "chemistry").rename(root / "alchemy")
    write_kris_lmms(hub_cache, root)
    with pytest.raises(BenchmarkError, match=r"'alchemy' is not one of KRIS-Bench's 22"):
        load_benchmark("wukeming11/kris-bench")


def test_a_kris_table_without_file_names_counts_its_images(hub_cache: Path, tmp_path: Path) -> None:
    """lmms-eval reads only ori_images and gt_image: without ori_img / gt_img the inputs are
    counted from the images themselves, and the same images come out."""
    root = write_kris(tmp_path / "authors")
    folder = write_kris_lmms(hub_cache, root)
    shard = folder / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["ori_img", "gt_img"]), shard)
    hub = load_benchmark("wukeming11/kris-bench")
    multi = next(i for i in hub.items if i.id == "multi-element_composition/21")
    assert multi.extra["input_images"] == [
        "multi-element_composition/ori_images[1]",
        "multi-element_composition/ori_images[2]",
    ]
    assert _images(hub) == _images(load_benchmark(root))


def test_imgedits_benchmark_tar_is_read_as_it_is(hub_cache: Path, tmp_path: Path) -> None:
    basic = write_imgedit(tmp_path / "authors", "basic")
    uge = write_imgedit(tmp_path / "authors", "uge")
    folder = write_imgedit_hub(hub_cache, tmp_path / "authors")
    hub = load_benchmark("sysuyy/ImgEdit")
    assert isinstance(hub, ArchiveBenchmark) and hub.name == "ImgEdit"
    assert [i.id for i in hub.items] == list(IMGEDIT_BASIC)
    _same_items(hub, load_benchmark(basic))
    hard = load_benchmark("sysuyy/ImgEdit", split="uge")
    assert [i.id for i in hard.items] == list(IMGEDIT_UGE)
    _same_items(hard, load_benchmark(uge))
    assert [p.name for p in folder.iterdir()] == ["Benchmark.tar"]  # nothing unpacked
    with pytest.raises(BenchmarkError, match="suites are basic and uge"):
        load_benchmark("sysuyy/ImgEdit", split="multiturn")


@pytest.mark.parametrize(
    "repo_id", ["Liang0223/KRIS_Bench", "wukeming11/kris-bench", "PhoenixZ/RISEBench"]
)
def test_a_real_hub_cache_of_symlinks_into_blobs_loads(
    hub_cache: Path, tmp_path: Path, repo_id: str
) -> None:
    """huggingface_hub keeps files in blobs/ and links them from the snapshot: following those
    links is not leaving the benchmark's folder."""
    if repo_id == "PhoenixZ/RISEBench":
        authors = load_benchmark(write_rise(tmp_path / "authors"))
        as_blobs(write_rise_hub(hub_cache, tmp_path / "authors"))
    else:
        root = write_kris(tmp_path / "authors")
        authors = load_benchmark(root)
        writer = write_kris_hub if repo_id == "Liang0223/KRIS_Bench" else write_kris_lmms
        as_blobs(writer(hub_cache, root, repo_id))
    _same_items(load_benchmark(repo_id), authors)


def test_a_link_out_of_the_cache_is_still_refused(hub_cache: Path, tmp_path: Path) -> None:
    root = write_kris(tmp_path / "authors")
    folder = as_blobs(write_kris_hub(hub_cache, root))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not yours")
    image = folder / "chemistry" / "7.jpg"
    image.unlink()
    image.symlink_to(secret)
    with pytest.raises(BenchmarkError, match="leads outside"):
        load_benchmark("Liang0223/KRIS_Bench")
    # nor does '..' reach the blobs from an annotation
    image.unlink()
    image.symlink_to(next((folder.parents[1] / "blobs").iterdir()))
    annotation = folder / "chemistry" / "annotation.json"
    blob = next((folder.parents[1] / "blobs").iterdir()).name
    text = annotation.read_text(encoding="utf-8").replace('"7.jpg"', f'"../../../blobs/{blob}"')
    annotation.unlink()
    annotation.write_text(text, encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"leads outside .*through '\.\.'"):
        load_benchmark("Liang0223/KRIS_Bench")
