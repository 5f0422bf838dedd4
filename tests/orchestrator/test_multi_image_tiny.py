"""Items with several input images or a reference image, through ``editbench run`` on real
services: the Qwen-Image-Edit-Plus-family tiny editor (its pipeline is handed every input: the
backend logs what it passes), the reward service's ``openai`` backend in front of a recording
judge endpoint (what the judge is shown, images and labels in order, as the authors' scripts
show them), and the single-input tiny editor, which refuses a multi-input item with a clear
reason while the run goes on. KRIS-Bench's and RISEBench's fixtures are written in their
published layouts (tests/orchestrator/published_layouts.py); the official tables still equal the
authors' statistics re-implemented in test_published_benchmarks.py."""

from __future__ import annotations

import ast
import base64
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from orchestrator.store import JsonlLog
from tests.orchestrator.harness import editbench, finish
from tests.orchestrator.published_layouts import write_kris, write_rise
from tests.orchestrator.test_published_benchmarks import KRIS_WITH_KP, kris_summarize
from tests.support.recording_judge import RecordingJudgeEndpoint
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny

PROMPTS = Path(__file__).parents[1] / "reward" / "data" / "benchmark_prompts"


def _kris_prompts() -> dict[str, str]:
    tree = ast.parse((PROMPTS / "kris_prompts.py.txt").read_text(encoding="utf-8"))
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


KRIS = _kris_prompts()
RISE = json.loads((PROMPTS / "rise_prompts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RecordingJudgeEndpoint]]:
    folder = tmp_path_factory.mktemp("recording-judge")
    with RecordingJudgeEndpoint().running() as endpoint:
        env = {
            "REWARD_BACKEND": "openai",
            "REWARD_MODEL": "recording-judge",
            "REWARD_OPENAI_BASE_URL": endpoint.base_url,
            "REWARD_OPENAI_API_KEY": "sk-test",
            "REWARD_MAX_WAIT_S": "0.05",
            "REWARD_CACHE_DIR": str(folder / "cache"),
        }
        service = ServiceProcess("reward_service", env, folder / "reward.log")
        with service.running(ready_timeout_s=120):
            yield service.url, endpoint


def _editor(model: str, model_cache: Path, log: Path) -> ServiceProcess:
    env = {
        "EDITOR_MODEL": model,
        "EDITOR_DEVICES": "cpu",
        "EDITOR_CACHE_DIR": str(model_cache),
        **REUSE_FREED_MEMORY,
    }
    return ServiceProcess("editor_service", env, log)


@pytest.fixture(scope="module")
def plus_editor(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("plus-editor") / "editor.log"
    with _editor("tiny-plus", model_cache, log).running() as service:
        yield service.url, log


def _run(editor: str, reward: str, benchmark: Path, protocol: str, out: Path, *extra: str) -> str:
    code, stdout, stderr = finish(
        editbench(
            "run",
            "--benchmark", str(benchmark),
            "--protocol", protocol,
            "--mode", "generate",
            "--out", str(out),
            "--editor-url", editor,
            "--reward-url", reward,
            "--steps", "2",
            "--size", "32x32",
            *extra,
        )
    )  # fmt: skip
    assert code == 0, stderr
    return stdout + stderr


def _pixels(data: bytes) -> np.ndarray[Any, Any]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _shown(part: dict[str, Any]) -> str | np.ndarray[Any, Any]:
    """A content part as the judge got it: its text, or its image's pixels."""
    if part["type"] == "text":
        return str(part["text"])
    url = part["image_url"]["url"]
    return _pixels(base64.b64decode(url.split(",", 1)[1]))


def _turn(endpoint: RecordingJudgeEndpoint, prompt: str) -> list[str | np.ndarray[Any, Any]]:
    """The one user turn sent with this prompt, as the judge got it."""
    found = [t for t in endpoint.user_turns() if t and t[0].get("text") == prompt]
    assert len(found) == 1, f"{len(found)} requests with the prompt {prompt[:80]!r}"
    return [_shown(part) for part in found[0]]


def _same(shown: list[str | np.ndarray[Any, Any]], want: list[str | bytes]) -> None:
    assert len(shown) == len(want)
    for got, expected in zip(shown, want, strict=True):
        if isinstance(expected, str):
            assert got == expected
        else:
            assert isinstance(got, np.ndarray) and np.array_equal(got, _pixels(expected))


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {row["item_id"]: row for row in JsonlLog(out / "results.jsonl").read()}


def test_a_kris_multi_input_item_is_edited_with_every_input_and_judged_as_its_scripts_judge(
    plus_editor: tuple[str, Path],
    judge: tuple[str, RecordingJudgeEndpoint],
    tmp_path: Path,
) -> None:
    (editor, editor_log), (reward, endpoint) = plus_editor, judge
    root = write_kris(tmp_path / "data")
    out = tmp_path / "kris-run"
    _run(editor, reward, root, "kris", out)
    rows = _rows(out)
    assert all(r["edit_status"] == "ok" and r["score_status"] == "ok" for r in rows.values())
    # The pipeline was handed all three inputs of the multi-element and the temporal item (the
    # backend logs what it passes), and one image for every other item.
    handed = editor_log.read_text().count("3 input images to QwenImageEditPlusPipeline")
    assert handed == 2

    def edit_of(item_id: str) -> bytes:
        return (out / rows[item_id]["edited_image"]).read_bytes()

    # viewpoint_change: metrics_view_change.py shows the ground-truth view last.
    view = "viewpoint_change/3"
    prompt = KRIS["prompt_view_instruction_following"].format(instruct=rows[view]["instruction"])
    _same(
        _turn(endpoint, prompt),
        [
            prompt,
            "This is the original image:",
            (root / "viewpoint_change" / "3.jpg").read_bytes(),
            "This is the edited image:",
            edit_of(view),
            "This is the ground truth image:",
            (root / "viewpoint_change" / "3-gt.jpg").read_bytes(),
        ],
    )
    # multi-element_composition: every input, then the prediction (metrics_multi_element.py).
    multi = "multi-element_composition/21"
    folder = root / "multi-element_composition"
    for name in ("prompt_consist_multi", "prompt_instruction_multi"):
        prompt = KRIS[name].format(instruct=rows[multi]["instruction"])
        _same(
            _turn(endpoint, prompt),
            [
                prompt,
                "Reference Image 1:",
                (folder / "21-1.jpg").read_bytes(),
                "Reference Image 2:",
                (folder / "21-2.jpg").read_bytes(),
                "Reference Image 3:",
                (folder / "21-3.jpg").read_bytes(),
                "Predicted Image:",
                edit_of(multi),
            ],
        )
    # temporal_prediction: frames 1-3 given, frame 4 generated, in frame order.
    temporal = "temporal_prediction/4"
    folder = root / "temporal_prediction"
    prompt = KRIS["prompt_consist_temporal"].format(N=4, instruct=rows[temporal]["instruction"])
    _same(
        _turn(endpoint, prompt),
        [
            prompt,
            "Frame 1 (Reference):",
            (folder / "4-1.jpg").read_bytes(),
            "Frame 2 (Reference):",
            (folder / "4-2.jpg").read_bytes(),
            "Frame 3 (Reference):",
            (folder / "4-3.jpg").read_bytes(),
            "Frame 4 (Generated):",
            edit_of(temporal),
        ],
    )
    # The official tables still equal BAGEL's summarize.py over the recorded scores.
    results: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows.values():
        scores = {q["name"]: q["score"] for q in row["questions"]}
        keys = ["consistency", "instruction", "quality"]
        if row["extra"]["dimension"] in KRIS_WITH_KP:
            keys.append("knowledge")
        results[row["category"]][row["extra"]["image_id"]] = {f"{k}_score": scores[k] for k in keys}
    want = kris_summarize(results)
    official = json.loads((out / "summary.json").read_text(encoding="utf-8"))["official"]
    assert official["headline"] == pytest.approx(want["summary"]["Overall"]["AVG"])
    dims = {r["label"]: r["values"] for r in official["tables"][0]["rows"]}
    for label, values in dims.items():
        assert values[-1] == pytest.approx(want["summary"][label]["AVG"])
    assert not official["notes"]
    # report.html shows the further inputs and the reference by the source.
    html = (out / "report.html").read_text(encoding="utf-8")
    for shown in ("input 2 of " + multi, "input 3 of " + multi, "reference of " + view):
        assert f'alt="{shown}"' in html
    assert rows[multi]["more_thumbs"] == {
        "input_2": "thumbs/input_2/multi-element_composition/21.jpg",
        "input_3": "thumbs/input_3/multi-element_composition/21.jpg",
    }


def test_a_rise_reference_item_is_judged_against_its_reference_image(
    plus_editor: tuple[str, Path],
    judge: tuple[str, RecordingJudgeEndpoint],
    tmp_path: Path,
) -> None:
    (editor, _), (reward, endpoint) = plus_editor, judge
    parent = write_rise(tmp_path / "data")
    out = tmp_path / "rise-run"
    _run(editor, reward, parent, "rise", out, "--categories", "logical_reasoning,spatial_reasoning")
    rows = _rows(out)
    assert all(r["score_status"] == "ok" for r in rows.values())
    data = parent / "data"
    # eval_vanilla: a logical puzzle with an image answer is checked against it, both calls.
    logical = "logical_reasoning/logical_reasoning_1"
    edit = (out / rows[logical]["edited_image"]).read_bytes()
    reference = (data / "logical_reasoning_images" / "1_ref.png").read_bytes()
    for name in ("prompt_logical_cons", "prompt_logical_img"):
        prompt = RISE[name].format(instruct=rows[logical]["instruction"])
        _same(_turn(endpoint, prompt), [prompt, reference, edit])
    # A spatial item with reference_img: the reference in place of the input.
    spatial = "spatial_reasoning/spatial_reasoning_2"
    edit = (out / rows[spatial]["edited_image"]).read_bytes()
    reference = (data / "spatial_reasoning_images" / "2_ref.png").read_bytes()
    for name in ("prompt_spatial_cons", "prompt_spatial_ref_img"):
        prompt = RISE[name].format(instruct=rows[spatial]["instruction"])
        _same(_turn(endpoint, prompt), [prompt, reference, edit])
    # The item with a text answer is shown its input and the edit, as before.
    text = "logical_reasoning/logical_reasoning_2"
    fill = {"instruct": rows[text]["instruction"], "reference": "The path goes 1-2-4."}
    prompt = RISE["prompt_logical_cons_ans"].format(**fill)
    source = (data / "logical_reasoning_images" / "2.png").read_bytes()
    _same(
        _turn(endpoint, prompt), [prompt, source, (out / rows[text]["edited_image"]).read_bytes()]
    )


def test_a_single_input_editor_refuses_a_multi_input_item_clearly_and_the_run_goes_on(
    model_cache: Path,
    judge: tuple[str, RecordingJudgeEndpoint],
    tmp_path: Path,
) -> None:
    reward, _ = judge
    root = write_kris(tmp_path / "data")
    out = tmp_path / "single-run"
    with _editor("tiny", model_cache, tmp_path / "editor.log").running() as editor:
        printed = _run(
            editor.url,
            reward,
            root,
            "kris",
            out,
            "--categories",
            "multi-element_composition,color_change",
        )
    rows = _rows(out)
    multi = rows["multi-element_composition/21"]
    assert multi["edit_status"] == "failed" and multi["edit_retryable"] is False
    error = multi["edit_error"]
    assert error["type"] == "too_many_inputs" and error["param"] == "image"
    assert "has 3 input images" in error["message"] and "takes 1" in error["message"]
    # Never sent: the editor answered the two single-input items only.
    log = (tmp_path / "editor.log").read_text()
    assert log.count(" done on worker ") == 2
    others = [r for item_id, r in rows.items() if item_id.startswith("color_change/")]
    assert len(others) == 2
    assert all(r["edit_status"] == "ok" and r["score_status"] == "ok" for r in others)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    left_out = "1 item with more input images than the editor takes"
    assert any(w.startswith(left_out) for w in summary["warnings"])
    assert any(n.startswith(left_out) for n in summary["official"]["notes"])
    # Said before the edit phase too (preflight reads the family's limit from /v1/info).
    assert "1 item with more input images than Qwen-Image-Edit takes (1)" in printed


def test_the_single_edit_and_score_commands_take_further_inputs_and_a_reference(
    plus_editor: tuple[str, Path],
    judge: tuple[str, RecordingJudgeEndpoint],
    tmp_path: Path,
) -> None:
    (editor, editor_log), (reward, endpoint) = plus_editor, judge
    root = write_kris(tmp_path / "data")
    folder = root / "multi-element_composition"
    edited = tmp_path / "edited.png"
    code, _, stderr = finish(
        editbench(
            "edit", str(folder / "21-1.jpg"), "compose the two", "-o", str(edited),
            "--image", str(folder / "21-2.jpg"),
            "--editor-url", editor, "--steps", "2", "--size", "32x32", "--seed", "3",
        )
    )  # fmt: skip
    assert code == 0, stderr
    assert editor_log.read_text().count("2 input images to QwenImageEditPlusPipeline") == 1
    view = root / "viewpoint_change"
    code, printed, stderr = finish(
        editbench(
            "score", str(view / "3.jpg"), str(edited), "turn the camera left",
            "--reference", str(view / "3-gt.jpg"), "--category", "viewpoint_change",
            "--protocol", "kris", "--mode", "generate", "--reward-url", reward, "--json",
        )
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(printed)["scored"] is True
    prompt = KRIS["prompt_view_instruction_following"].format(instruct="turn the camera left")
    _same(
        _turn(endpoint, prompt),
        [
            prompt,
            "This is the original image:",
            (view / "3.jpg").read_bytes(),
            "This is the edited image:",
            edited.read_bytes(),
            "This is the ground truth image:",
            (view / "3-gt.jpg").read_bytes(),
        ],
    )
    # Without the reference the protocol's question cannot be asked: a clear error, no traceback.
    code, _, stderr = finish(
        editbench(
            "score", str(view / "3.jpg"), str(edited), "turn the camera right",
            "--category", "viewpoint_change", "--protocol", "kris", "--mode", "generate",
            "--reward-url", reward,
        )
    )  # fmt: skip
    assert code == 1 and "reference" in stderr and "Traceback" not in stderr
