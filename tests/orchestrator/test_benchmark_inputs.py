"""What a benchmark may make editbench do: read only inside its folder, never expand, never let
two items share a file. Each class is tried with several cases, through the loaders and through
``editbench run`` (its real entry point)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestrator.benchmarks import (
    BenchmarkError,
    Item,
    item_relpath,
    load_benchmark,
    normalize_text,
)
from orchestrator.benchmarks.base import legacy_item_relpath
from orchestrator.config import ConfigError, read_config_file, resolve_settings
from orchestrator.phases import find_edited_file
from orchestrator.progress import NullProgress
from orchestrator.retry import RetryPolicy
from orchestrator.runner import run_benchmark
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices
from tests.orchestrator.harness import editbench, finish
from tests.support.images import image_bytes


def _manifest(folder: Path, images: list[str], suffix: str = ".jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"item-{i}", "category": "c", "instruction": "make it red", "image": image}
        for i, image in enumerate(images)
    ]
    path = folder / f"manifest{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".csv":
        lines = ["id,category,instruction,image"]
        lines += [f"{r['id']},{r['category']},{r['instruction']},{r['image']}" for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        body = "".join(
            f"- id: {r['id']}\n  category: c\n  instruction: make it red\n"
            f"  image: {json.dumps(r['image'])}\n"
            for r in rows
        )
        path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A benchmark folder with one good image, and a secret image beside it (outside)."""
    bench = tmp_path / "bench"
    (bench / "images").mkdir(parents=True)
    (bench / "images" / "ok.png").write_bytes(image_bytes(16, 16, seed=1))
    secret = tmp_path / "secret.png"
    secret.write_bytes(image_bytes(16, 16, seed=2))
    (bench / "images" / "link-out.png").symlink_to(secret)
    (bench / "images" / "dir-out").symlink_to(tmp_path)
    (bench / "images" / "link-in.png").symlink_to(bench / "images" / "ok.png")
    return {"bench": bench, "secret": secret}


OUTSIDE_CASES = {
    "absolute": lambda L: str(L["secret"]),
    "dot-dot": lambda L: "../secret.png",
    "dot-dot deeper": lambda L: "images/../../secret.png",
    "symlink to a file outside": lambda L: "images/link-out.png",
    "symlink to a folder outside": lambda L: "images/dir-out/secret.png",
    "absolute inside the folder": lambda L: str(L["bench"] / "images" / "ok.png"),
}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".yaml"])
@pytest.mark.parametrize("case", sorted(OUTSIDE_CASES))
def test_an_image_path_that_leads_out_of_the_benchmark_is_refused_naming_the_item(
    layout: dict[str, Path], case: str, suffix: str
) -> None:
    bad = OUTSIDE_CASES[case](layout)
    manifest = _manifest(layout["bench"], ["images/ok.png", bad], suffix)
    with pytest.raises(BenchmarkError) as refused:
        load_benchmark(manifest)
    message = str(refused.value)
    assert "item-1" in message and "item-0" not in message
    assert "--allow-outside-paths" in message

    allowed = load_benchmark(manifest, allow_outside_paths=True)
    assert [item.id for item in allowed.items] == ["item-0", "item-1"]


@pytest.mark.parametrize(
    "inside", ["images/ok.png", "images/../images/ok.png", "./images/ok.png", "images/link-in.png"]
)
def test_paths_that_stay_inside_the_folder_load(layout: dict[str, Path], inside: str) -> None:
    benchmark = load_benchmark(_manifest(layout["bench"], [inside]))
    [(item, data)] = list(benchmark.iter_images(benchmark.items))
    assert item.id == "item-0" and data == (layout["bench"] / "images" / "ok.png").read_bytes()


def test_a_symlink_swapped_in_after_loading_is_not_read(layout: dict[str, Path]) -> None:
    (layout["bench"] / "images" / "later.png").write_bytes(image_bytes(16, 16, seed=3))
    benchmark = load_benchmark(_manifest(layout["bench"], ["images/later.png"]))
    (layout["bench"] / "images" / "later.png").unlink()
    (layout["bench"] / "images" / "later.png").symlink_to(layout["secret"])
    with pytest.raises(BenchmarkError, match="item-0"):
        list(benchmark.iter_images(benchmark.items))


def test_gedit_image_paths_stay_inside_the_dataset_folder(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    secret = tmp_path / "secret.png"
    secret.write_bytes(image_bytes(16, 16, seed=3))
    folder = tmp_path / "gedit"
    folder.mkdir()
    (folder / "in.png").write_bytes(image_bytes(16, 16, seed=4))
    table = pa.table(
        {
            "key": ["a", "b", "c"],
            "task_type": ["color_alter"] * 3,
            "instruction": ["x"] * 3,
            "instruction_language": ["en"] * 3,
            "input_image": [
                {"bytes": None, "path": "in.png"},
                {"bytes": None, "path": str(secret)},
                {"bytes": None, "path": "../secret.png"},
            ],
        }
    )
    pq.write_table(table, folder / "data.parquet")
    benchmark = load_benchmark(folder)
    [(_, data)] = list(benchmark.iter_images(benchmark.items[:1]))
    assert data == (folder / "in.png").read_bytes()
    for item in benchmark.items[1:]:
        with pytest.raises(BenchmarkError, match=item.id):
            list(benchmark.iter_images([item]))
    allowed = load_benchmark(folder, allow_outside_paths=True)
    assert [d for _, d in allowed.iter_images(allowed.items[1:])] == [secret.read_bytes()] * 2


def test_an_edited_dir_name_that_leads_out_is_not_used(tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    edited.mkdir()
    (tmp_path / "outside.png").write_bytes(b"secret")
    (edited / "linked.png").symlink_to(tmp_path / "outside.png")
    for item_id in ("../outside", "linked", "a/../../outside"):
        item = Item(id=item_id, category="c", instruction="i", source="-")
        assert find_edited_file(edited, item) is None
        assert find_edited_file(edited, item, allow_outside_paths=True) is not None


def test_run_refuses_an_outside_path_through_the_cli(layout: dict[str, Path]) -> None:
    manifest = _manifest(layout["bench"], ["images/ok.png", "../secret.png"])
    out = layout["bench"].parent / "run"
    code, _, stderr = finish(
        editbench("run", "-b", str(manifest), "-o", str(out), "--ready-timeout-s", "0"),
        timeout_s=120,
    )
    assert code == 1
    assert "item-1" in stderr and "outside" in stderr and "Traceback" not in stderr
    assert not (out / "edits.jsonl").exists()


# --- YAML cannot expand ---------------------------------------------------------------------

BOMB = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)

YAML_CASES = {
    "billion laughs": BOMB + "items: []\n",
    "alias in an item": "items:\n- &x {id: a, category: c, instruction: i, image: i.png}\n- *x\n",
    "merge key": "base: &b {category: c}\n"
    "items:\n- {<<: *b, id: a, instruction: i, image: i.png}\n",
    "alias as a value": "items:\n- {id: &i a, category: *i, instruction: i, image: i.png}\n",
    "deep nesting": "items: " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_yaml_manifest_that_could_expand_is_refused(tmp_path: Path, case: str) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(YAML_CASES[case], encoding="utf-8")
    (tmp_path / "i.png").write_bytes(image_bytes(8, 8, seed=0))
    with pytest.raises(BenchmarkError, match=r"alias|nested deeper"):
        load_benchmark(manifest)


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_yaml_config_or_reporting_file_that_could_expand_is_refused(
    tmp_path: Path, case: str
) -> None:
    config = tmp_path / "editbench.yaml"
    config.write_text(YAML_CASES[case], encoding="utf-8")
    with pytest.raises(ConfigError, match=r"alias|nested deeper"):
        read_config_file(config)
    bench = tmp_path / "bench"
    _manifest(bench, ["i.png"])
    (bench / "i.png").write_bytes(image_bytes(8, 8, seed=0))
    (bench / "reporting.yaml").write_text(YAML_CASES[case], encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"alias|nested deeper"):
        load_benchmark(bench)


def test_a_deeply_nested_jsonl_manifest_line_is_refused_with_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    (tmp_path / "i.png").write_bytes(image_bytes(8, 8, seed=0))
    first = '{"id": "a", "category": "c", "instruction": "i", "image": "i.png"}\n'
    manifest.write_text(first + "[" * 100000 + "]" * 100000 + "\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"manifest.jsonl:2"):
        load_benchmark(manifest)


# --- two ids never share a file ---------------------------------------------------------------

COLLIDING = [
    ("a b", f"a_b-{legacy_item_relpath('a b')[-8:]}"),  # the reported case
    ("a b", "a_b"),
    ("a b", "a?b"),
    ("x/y", "x//y"),
    ("x/./y", "x/y"),
    ("..", "item"),
    ("", "item"),
    ("e\u0301", "\u00e9"),  # NFD and NFC of one letter
    ("x" * 200, "x" * 200 + "y"),
    ("物" * 60, "物" * 60 + "理"),
    ("x.jpg/y", "x"),  # a folder named like another item's file
    ("a.b/c", "a_b/c"),
]


@pytest.mark.parametrize(("first", "second"), COLLIDING)
def test_two_ids_never_get_one_file_name(first: str, second: str) -> None:
    names = {item_relpath(first), item_relpath(second)}
    assert len(names) == 2
    files = {f"{n}.{s}" for n in names for s in ("png", "jpg")}
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    assert not files & folders  # no file is also another item's folder
    for name in names:
        assert len(max(name.split("/"), key=len).encode()) < 200
        assert ".." not in name.split("/") and not name.startswith("/")


def test_every_colliding_pair_runs_into_distinct_files(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    (bench / "images").mkdir(parents=True)
    # As a manifest reads them (NFC, stripped); an empty id is not a valid manifest id.
    ids = [i for i in dict.fromkeys(normalize_text(i) for p in COLLIDING for i in p) if i]
    rows = []
    for index, item_id in enumerate(ids):
        (bench / "images" / f"{index}.png").write_bytes(image_bytes(16, 16, seed=index))
        rows.append(
            {"id": item_id, "category": "c", "instruction": "i", "image": f"images/{index}.png"}
        )
    manifest = bench / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = resolve_settings(
        {
            "benchmark": str(manifest),
            "out": tmp_path / "run",
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
        },
        environ={},
    )
    outcome = asyncio.run(
        run_benchmark(
            settings,
            NullProgress(),
            transport=FakeServices().transport(),
            policy=RetryPolicy(job_deadline_s=600, probe_interval_s=0.01),
        )
    )
    assert outcome.edit is not None and outcome.edit.ok == len(rows)
    edits = list((tmp_path / "run" / "edits").rglob("*.png"))
    assert len(edits) == len(rows)


def test_old_run_folder_names_are_still_found(tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    edited.mkdir()
    item = Item(id="a b", category="c", instruction="i", source="-")
    (edited / f"{legacy_item_relpath('a b')}.png").write_bytes(b"png")
    assert find_edited_file(edited, item) == (edited / f"{legacy_item_relpath('a b')}.png")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("state.json", '{"_data_files": [{"filename": "../outside.arrow"}]}'),
        ("state.json", '{"_data_files": [{"filename": "/etc/hostname"}]}'),
        ("state.json", '{"_data_files": "x"}'),
        ("state.json", "{not json"),
        ("dataset_dict.json", '{"splits": ["../outside"]}'),
        ("dataset_dict.json", '{"splits": 3}'),
    ],
)
def test_a_save_to_disk_folder_cannot_point_outside_itself(
    tmp_path: Path, name: str, content: str
) -> None:
    folder = tmp_path / "gedit"
    folder.mkdir()
    (tmp_path / "outside.arrow").write_bytes(b"not arrow")
    (folder / name).write_text(content, encoding="utf-8")
    with pytest.raises(BenchmarkError, match=name.replace(".", r"\.")):
        load_benchmark(folder)


def test_a_csv_manifest_csv_cannot_read_is_refused_with_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    body = "id,category,instruction,image\na,c," + "x" * 200_000 + ",i.png\n"
    manifest.write_text(body, encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"manifest\.csv:\d+: not valid CSV"):
        load_benchmark(manifest)


def test_an_image_path_with_a_nul_byte_is_refused_naming_the_item(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,category,instruction,image\na,c,i,i\x00.png\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"item 'a': .*NUL byte"):
        load_benchmark(manifest)
