"""``editbench run --editor-api openai``: any OpenAI-compatible images-edit endpoint as the editor.

Against fakes written from SGLang diffusion's and vLLM-Omni's documented request and response
shapes (tests/support/fake_images_api.py: their field names, their error bodies), served by a
real uvicorn process, and against our own editor's /v1/images/edits on the tiny model.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import JsonlLog
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.harness import cli_env, editbench, finish, wait_for
from tests.orchestrator.published_layouts import write_kris
from tests.support.servers import REPO_ROOT, REUSE_FREED_MEMORY, ServiceProcess

KEY = "sk-test-0123456789abcdef"


class FakeImagesApi(ServiceProcess):
    """``python -m uvicorn --port N tests.support.fake_images_api:app``, logging its requests."""

    def __init__(self, folder: Path, dialect: str, **settings: str) -> None:
        self.requests_path = folder / f"{dialect}-requests.jsonl"
        super().__init__(
            "uvicorn",
            {
                "FAKE_DIALECT": dialect,
                "FAKE_API_KEY": KEY,
                "FAKE_LOG": str(self.requests_path),
                **settings,
            },
            folder / f"{dialect}.log",
            args=["tests.support.fake_images_api:app", "--host", "127.0.0.1"],
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict[str, Any]]:
        if not self.requests_path.exists():
            return []
        text = self.requests_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]


@contextmanager
def fake(folder: Path, dialect: str, **settings: str) -> Iterator[FakeImagesApi]:
    server = FakeImagesApi(folder, dialect, **settings)
    with server.running(ready_timeout_s=60):
        yield server


def bench(folder: Path, n: int, refused: int | None = None) -> Path:
    rows = [
        {
            "id": f"i{k:02d}",
            "category": ("color", "物理")[k % 2],
            "instruction": f"forbidden edit {k}" if k == refused else f"edit {k}",
        }
        for k in range(n)
    ]
    return write_manifest(folder / "bench", rows)


def records(path: Path) -> list[dict[str, Any]]:
    return [dict(r) for r in JsonlLog(path).read()]


def run_edit_only(server: FakeImagesApi, benchmark: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--benchmark",
        str(benchmark),
        "--out",
        str(out),
        "--phase",
        "edit",
        "--editor-url",
        server.base,
        "--editor-api",
        "openai",
        "--ready-timeout-s",
        "60",
        *extra,
    ]


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    """The key in a file, named by EDITBENCH_EDITOR_API_KEY_FILE, as a user keeps secrets."""
    secret = tmp_path / "editor.key"
    secret.write_text(KEY + "\n", encoding="utf-8")
    return {**cli_env(), "EDITBENCH_EDITOR_API_KEY_FILE": str(secret)}


def editbench_with(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_vllm_omni_endpoint_gets_the_runs_settings_and_reports_usage(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    with fake(tmp_path, "vllm-omni", FAKE_REFUSE="forbidden", FAKE_THROTTLE_FIRST="1") as server:
        out = tmp_path / "run"
        args = run_edit_only(
            server,
            bench(tmp_path, 4, refused=2),
            out,
            "--steps",
            "8",
            "--param",
            "guidance_scale=2.5",
            "--size",
            "48x32",
        )
        code, _, err = finish(editbench_with(key_env, *args))
        requests = server.requests()

    assert code == 0, err  # a failed item is a result, recorded; the run itself ends
    edits = records(out / "edits.jsonl")
    assert Counter(r["item_id"] for r in edits) == {f"i{k:02d}": 1 for k in range(4)}
    by_item = {r["item_id"]: r for r in edits}
    refused = by_item["i02"]
    assert refused["status"] == "failed"
    assert "rejected by the content policy" in refused["error"]["message"]
    assert refused["error"]["status"] == 400
    for item in ("i00", "i01", "i03"):
        record = by_item[item]
        assert record["status"] == "ok", record
        assert record["retries"] >= 1  # the 429 with Retry-After was waited out
        assert record["model"]["id"] == "Qwen/Qwen-Image-Edit-2511"
        assert record["model"]["source"] == "endpoint"
        sent = record["response"]["sent"]
        assert sent["num_inference_steps"] == "8" and sent["guidance_scale"] == "2.5"
        assert sent["size"] == "48x32" and sent["seed"] == str(record["params"]["seed"])
        assert record["response"]["usage"]["total_tokens"] == 4107
        assert (record["response"]["width"], record["response"]["height"]) == (48, 32)
        assert (out / record["image"]).is_file()
    answered = [r for r in requests if r["status"] == 200]
    assert {r["fields"]["model"] for r in answered} == {"Qwen/Qwen-Image-Edit-2511"}
    assert all(r["fields"]["output_format"] == "png" for r in answered)
    # the key went in the Authorization header (else 401s) and is written nowhere
    assert not [r for r in requests if r["status"] == 401]
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".html", ".csv", ".log"):
            assert KEY not in path.read_text(encoding="utf-8", errors="replace"), path


def test_sglang_endpoint_errors_are_recorded_in_the_endpoints_words(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    with fake(tmp_path, "sglang", FAKE_REFUSE="forbidden") as server:
        out = tmp_path / "run"
        args = run_edit_only(server, bench(tmp_path, 3, refused=1), out, "--seed-policy", "random")
        code, _, err = finish(editbench_with(key_env, *args))
        requests = server.requests()

    assert code == 0, err
    assert "1 edit failed" in err
    by_item = {r["item_id"]: r for r in records(out / "edits.jsonl")}
    assert by_item["i01"]["status"] == "failed"
    assert by_item["i01"]["error"]["message"].startswith("HTTP 400: Your request was rejected")
    assert by_item["i00"]["status"] == by_item["i02"]["status"] == "ok"
    # nothing SGLang's route does not read was sent: no seed (random policy), no steps
    assert by_item["i00"]["params"]["seed"] is None and by_item["i00"]["seed"] is None
    assert all(r["ignored"] == [] for r in requests if r["route"] == "edits")


def test_a_refused_key_stops_the_run_at_once_instead_of_waiting_for_readiness(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    secret = tmp_path / "wrong.key"
    secret.write_text("sk-wrong-key-000000000000\n", encoding="utf-8")
    env = {**key_env, "EDITBENCH_EDITOR_API_KEY_FILE": str(secret)}
    with fake(tmp_path, "vllm-omni") as server:
        args = run_edit_only(server, bench(tmp_path, 2), tmp_path / "run")
        args[args.index("--ready-timeout-s") + 1] = "3600"
        # Far below the hour of --ready-timeout-s: the refusal ends the run, not the timeout.
        code, _, err = finish(editbench_with(env, *args), timeout_s=240)
        requests = server.requests()

    assert code != 0
    assert "refused this client's key (HTTP 401" in err, err
    assert "sk-wrong-key" not in err
    assert not any(r["route"] == "edits" and r.get("status") != 401 for r in requests)


def test_a_killed_run_resumes_to_exactly_one_record_per_item(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    # The endpoint answers three edits and holds every later one until the gate opens: the kill
    # lands mid-phase whatever the machine's speed (with timed edits, 0.3 s each, a late kill
    # could find the run over and test no resume at all).
    gate = tmp_path / "open"
    with fake(tmp_path, "vllm-omni", FAKE_EDIT_GATE=str(gate), FAKE_EDIT_GATE_AFTER="3") as server:
        out = tmp_path / "run"
        args = run_edit_only(server, bench(tmp_path, 10), out, "--steps", "4")
        first = editbench_with(key_env, *args)
        wait_for(
            lambda: (
                len(ok_items(out)) == 3 and any(r["status"] == "held" for r in server.requests())
            ),
            "three edits recorded and a fourth held",
            first,
        )
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)  # reaped, its pipes closed
        # Killed mid-phase: three items done, seven not (one or more of them sent and held).
        assert len(ok_items(out)) == 3
        gate.touch()
        code, _, err = finish(editbench_with(key_env, *args, "--resume"))

    assert code == 0, err
    edits = records(out / "edits.jsonl")
    ok = Counter(r["item_id"] for r in edits if r["status"] == "ok")
    assert ok == {f"i{k:02d}": 1 for k in range(10)}
    assert len({r["job_id"] for r in edits}) == 10


def ok_items(out: Path) -> list[str]:
    return [r["item_id"] for r in records(out / "edits.jsonl") if r["status"] == "ok"]


@pytest.mark.tiny
def test_our_own_images_edits_route_serves_the_sample_benchmark(
    model_cache: Path, tmp_path: Path
) -> None:
    editor = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": "tiny",
            "EDITOR_DEVICES": "cpu",
            "EDITOR_CACHE_DIR": str(model_cache),
            **REUSE_FREED_MEMORY,
        },
        tmp_path / "editor.log",
    )
    with editor.running(ready_timeout_s=300):
        out = tmp_path / "run"
        args = [
            "run",
            "--benchmark",
            "sample",
            "--limit-per-category",
            "1",
            "--phase",
            "edit",
            "--out",
            str(out),
            "--editor-url",
            f"{editor.url}/v1",
            "--editor-api",
            "openai",
            "--steps",
            "2",
            "--size",
            "32x32",
        ]
        code, _, err = finish(editbench(*args))
    assert code == 0, err
    edits = records(out / "edits.jsonl")
    assert edits and all(r["status"] == "ok" for r in edits)
    assert {r["model"]["id"] for r in edits} == {"tiny"}
    assert all(r["response"]["sent"]["num_inference_steps"] == "2" for r in edits)
    assert all((r["response"]["width"], r["response"]["height"]) == (32, 32) for r in edits)


def test_a_served_editor_is_sent_every_input_of_a_multi_input_item_as_image_parts(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    """The official SDK sends a list of images as ``image[]`` parts, in order; one as ``image``."""
    root = write_kris(tmp_path / "data")
    with fake(tmp_path, "vllm-omni") as server:
        args = run_edit_only(server, root, tmp_path / "out", "--categories",
                             "multi-element_composition,color_change")  # fmt: skip
        code, _, stderr = finish(editbench_with(key_env, *args))
        assert code == 0, stderr
        sent = {r["fields"]["prompt"]: r["images"] for r in server.requests() if "images" in r}
    folder = root / "multi-element_composition"
    assert sent["multi-element_composition instruction 21"] == [
        ["image[]", hashlib.sha256((folder / name).read_bytes()).hexdigest()]
        for name in ("21-1.jpg", "21-2.jpg", "21-3.jpg")
    ]
    one = (root / "color_change" / "1.jpg").read_bytes()
    assert sent["color_change instruction 1"] == [["image", hashlib.sha256(one).hexdigest()]]
