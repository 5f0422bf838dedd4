"""FLUX.1 Kontext and LongCat-Image-Edit served as users run them: a real uvicorn process on the
tiny random-weight build of each (tiny_models), through /v1/edits and /v1/images/edits."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from orchestrator.store import JsonlLog
from shared_schemas import EditorInfo, EditResponse, ErrorResponse, OpenAIImagesResponse
from tests.orchestrator.harness import editbench, finish
from tests.support.images import b64, decode_b64_image, image_bytes
from tests.support.servers import REUSE_FREED_MEMORY, ServiceProcess

pytestmark = pytest.mark.tiny

SOURCE = image_bytes(64, 48, seed=3)


@pytest.fixture(scope="module", params=["tiny-kontext", "tiny-longcat"])
def editor(
    request: pytest.FixtureRequest, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    model = str(request.param)
    service = ServiceProcess(
        "editor_service",
        {
            "EDITOR_MODEL": model,
            "EDITOR_DEVICES": "cpu",
            "EDITOR_CACHE_DIR": str(model_cache),
            **REUSE_FREED_MEMORY,
        },
        tmp_path_factory.mktemp("editor-logs") / "editor.log",
    )
    with service.running(ready_timeout_s=300):
        yield model, service.url


@pytest.fixture(scope="module")
def judge(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = ServiceProcess(
        "reward_service",
        {
            "REWARD_MODEL": "tiny",
            "REWARD_DEVICES": "cpu",
            "REWARD_CACHE_DIR": str(model_cache),
            **REUSE_FREED_MEMORY,
        },
        tmp_path_factory.mktemp("judge-logs") / "judge.log",
    )
    with service.running(ready_timeout_s=300):
        yield service.url


TITLES = {"tiny-kontext": "FLUX.1 Kontext", "tiny-longcat": "LongCat-Image-Edit"}


def info(url: str) -> EditorInfo:
    return EditorInfo.model_validate(httpx.get(f"{url}/v1/info", timeout=30).json())


def test_info_names_the_family_its_parameters_and_defaults(editor: tuple[str, str]) -> None:
    model, url = editor
    described = info(url)
    assert described.family is not None and described.model is not None
    parameters = {p.name: p.default for p in described.family.parameters}
    if model == "tiny-kontext":
        assert described.family.name == "flux-kontext"
        assert described.model.model_class == "FluxKontextPipeline"
        assert parameters == {"guidance_scale": 2.5, "true_cfg_scale": 1.0}
        assert described.family.default_steps == 28 and described.family.takes_size
    else:
        assert described.family.name == "longcat-image-edit"
        assert described.model.model_class == "LongCatImageEditPipeline"
        assert parameters == {"guidance_scale": 4.5}
        assert not described.family.takes_size


def test_edits_take_the_familys_guidance_scale(editor: tuple[str, str]) -> None:
    model, url = editor
    size = {"width": 64, "height": 48} if model == "tiny-kontext" else {}
    payload = {
        "image": b64(SOURCE),
        "instruction": "make the sky red",
        "num_inference_steps": 2,
        "seed": 7,
        "parameters": {"guidance_scale": 3.0},
        **size,
    }
    response = httpx.post(f"{url}/v1/edits", json=payload, timeout=300)
    assert response.status_code == 200, response.text
    body = EditResponse.model_validate(response.json())
    assert body.parameters["guidance_scale"] == 3.0 and body.num_inference_steps == 2
    assert body.family == info(url).family.name  # type: ignore[union-attr]
    image = Image.open(io.BytesIO(body.image))
    if model == "tiny-kontext":
        assert image.size == (64, 48)
    assert np.asarray(image).std() > 0  # not a blank (NaN-decoded) image
    other = httpx.post(
        f"{url}/v1/edits", json={**payload, "parameters": {"guidance_scale": 6.0}}, timeout=300
    )
    assert other.status_code == 200, other.text
    assert not np.array_equal(
        np.asarray(decode_b64_image(other.json()["image"])), np.asarray(image)
    )


def test_images_edits_form_takes_the_familys_parameters(editor: tuple[str, str]) -> None:
    model, url = editor
    form = {"prompt": "make the sky red", "num_inference_steps": "2", "guidance_scale": "3.5"}
    if model == "tiny-kontext":
        form["size"] = "64x48"
    response = httpx.post(
        f"{url}/v1/images/edits",
        data=form,
        files={"image": ("source.png", SOURCE, "image/png")},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    answer = OpenAIImagesResponse.model_validate(response.json())
    assert len(answer.data) == 1
    if model == "tiny-kontext":
        assert answer.size == "64x48"


def test_a_parameter_the_family_does_not_take_is_a_400_naming_it(editor: tuple[str, str]) -> None:
    model, url = editor
    refused = "true_cfg_scale" if model == "tiny-longcat" else "strength"
    payload = {"image": b64(SOURCE), "instruction": "make the sky red", "num_inference_steps": 2}
    response = httpx.post(
        f"{url}/v1/edits", json={**payload, "parameters": {refused: 2.0}}, timeout=60
    )
    assert response.status_code == 400
    error = ErrorResponse.model_validate(response.json()).error
    assert error.param == refused and refused in error.message
    form = httpx.post(
        f"{url}/v1/images/edits",
        data={"prompt": "make the sky red", refused: "2"},
        files={"image": ("source.png", SOURCE, "image/png")},
        timeout=60,
    )
    assert form.status_code == 400
    assert ErrorResponse.model_validate(form.json()).error.param == refused
    if model == "tiny-longcat":
        sized = httpx.post(f"{url}/v1/edits", json={**payload, "width": 64, "height": 64})
        assert sized.status_code == 400
        assert ErrorResponse.model_validate(sized.json()).error.param == "size"


def test_more_input_images_than_the_family_takes_is_a_400_naming_the_limit(
    editor: tuple[str, str],
) -> None:
    model, url = editor
    family = info(url).family
    assert family is not None and family.max_images == 1  # FLUX.1 Kontext, LongCat: one image
    payload = {
        "image": b64(SOURCE),
        "images": [b64(image_bytes(64, 48, seed=4))],
        "instruction": "put the second in the first",
        "num_inference_steps": 2,
    }
    response = httpx.post(f"{url}/v1/edits", json=payload, timeout=60)
    assert response.status_code == 400
    error = ErrorResponse.model_validate(response.json()).error
    assert error.param == "images" and f"{model} takes 1 ({TITLES[model]})" in error.message
    assert "QwenImageEditPlusPipeline (up to 3)" in error.message  # what takes several
    form = httpx.post(
        f"{url}/v1/images/edits",
        data={"prompt": "put the second in the first"},
        files=[
            ("image[]", ("a.png", SOURCE, "image/png")),
            ("image[]", ("b.png", image_bytes(64, 48, seed=4), "image/png")),
        ],
        timeout=60,
    )
    assert form.status_code == 400
    refused = ErrorResponse.model_validate(form.json()).error
    assert refused.param == "image" and "takes 1" in refused.message


def test_input_fidelity_low_is_a_400_naming_the_loaded_family(editor: tuple[str, str]) -> None:
    model, url = editor
    response = httpx.post(
        f"{url}/v1/images/edits",
        data={"prompt": "make the sky red", "input_fidelity": "low"},
        files={"image": ("source.png", SOURCE, "image/png")},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = ErrorResponse.model_validate(response.json()).error
    assert error.param == "input_fidelity"
    title = TITLES[model]
    assert f"only high: {title} always conditions on the whole input image" in error.message
    assert "Qwen-Image-Edit" not in error.message  # not another family's words


def left_half_mask_png(side: int) -> bytes:
    """OpenAI's mask: fully transparent (edit here) on the left half, opaque (keep) elsewhere."""
    mask = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, side // 2, side))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_mask_runs_kontexts_inpainting_pipeline_and_is_a_400_on_longcat(
    editor: tuple[str, str],
) -> None:
    model, url = editor
    square = image_bytes(64, 64, seed=5)
    form = {"prompt": "make the sky red", "num_inference_steps": "2", "seed": "5"}

    def edit(changes: dict[str, str], *, mask: bool = True) -> httpx.Response:
        files = {"image": ("source.png", square, "image/png")}
        if mask:
            files["mask"] = ("mask.png", left_half_mask_png(64), "image/png")
        return httpx.post(
            f"{url}/v1/images/edits", data={**form, **changes}, files=files, timeout=300
        )

    def refused(response: httpx.Response) -> tuple[str | None, str]:
        assert response.status_code == 400, response.text
        error = ErrorResponse.model_validate(response.json()).error
        return error.param, error.message

    family = info(url).family
    assert family is not None
    if model == "tiny-longcat":
        assert not family.inpainting
        param, message = refused(edit({"guidance_scale": "3"}))
        assert param == "mask" and "no inpainting pipeline" in message
        assert "(LongCat-Image-Edit, LongCatImageEditPipeline)" in message
        assert "FluxKontextInpaintPipeline" in message  # where masks do work
        return
    assert family.inpainting
    masked = edit({"guidance_scale": "3"})
    assert masked.status_code == 200, masked.text
    image = decode_b64_image(OpenAIImagesResponse.model_validate(masked.json()).data[0].b64_json)
    assert image.size == (1024, 1024)  # the inpainting pipeline's own ~1 MP: no size with a mask
    assert np.asarray(image).std() > 0
    plain = edit({"guidance_scale": "3"}, mask=False)
    assert plain.status_code == 200, plain.text
    unmasked = decode_b64_image(plain.json()["data"][0]["b64_json"])
    # Same seed, prompt and guidance: the mask, not ignored, made another image.
    assert not np.array_equal(np.asarray(image), np.asarray(unmasked))
    # What the inpainting pipeline does not take is refused, naming it, before any work.
    assert refused(edit({"size": "64x64"}))[0] == "size"
    param, message = refused(edit({"image_guidance_scale": "1.5"}))
    assert param == "image_guidance_scale" and "guidance_scale, true_cfg_scale" in message


def test_editbench_run_benchmarks_the_family_end_to_end(
    editor: tuple[str, str], judge: str, tmp_path: Path
) -> None:
    model, url = editor
    out = tmp_path / "run"
    size = ["--size", "32x32"] if model == "tiny-kontext" else []
    code, stdout, stderr = finish(
        editbench(
            "run",
            "--benchmark",
            "sample",
            "--limit",
            "2",
            "--out",
            str(out),
            "--editor-url",
            url,
            "--reward-url",
            judge,
            "--steps",
            "2",
            "--param",
            "guidance_scale=3",
            "--protocol",
            "single",
            *size,
        )
    )
    assert code == 0, stderr
    edits = [dict(r) for r in JsonlLog(out / "edits.jsonl").read()]
    scores = [dict(r) for r in JsonlLog(out / "scores.jsonl").read()]
    assert len(edits) == 2 and all(r["status"] == "ok" for r in edits)
    assert {r["response"]["family"] for r in edits} == {info(url).family.name}  # type: ignore[union-attr]
    assert all(r["response"]["parameters"]["guidance_scale"] == 3.0 for r in edits)
    assert len(scores) == 2 and all(r["status"] == "ok" for r in scores)
    assert (out / "report.html").is_file() and "report:" in stdout
