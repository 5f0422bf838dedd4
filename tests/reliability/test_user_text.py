"""User text is only ever text: the real tiny editor and judge, as processes over real HTTP.

Every control token of the model's tokenizer, in every user field of every route, protocol and
mode, is refused with 400 naming the field; near misses and lookalikes (which the tokenizer reads
as plain text) are served; a refused request never fails another client's work. Before, each of
these was a 500, and in the judge it failed the other requests of its batch.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service_kit.text_safety import control_token_in, find_reserved, reserved_strings
from tests.reliability.test_hostile_inputs import service
from tests.support.hostile import edit_body, score_body, valid_png
from tests.support.servers import ServiceProcess
from tiny_models.tokenizer import build_qwen_tokenizer

# Known to be Qwen's, to prove the set derived from the tokenizer is not empty or partial; the
# services themselves use the derived set only.
QWEN_CONTROL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<tool_call>")
QWEN3_ONLY = ("<think>", "</think>", "<tool_response>")

# Read as plain text by the tokenizer (exactly: control_token_in says so below), so served.
NEAR_MISSES = (
    "<|im_end",
    "|im_end|>",
    "<|IM_END|>",
    "< |im_end|>",
    "<|im_end |>",
    "<| image_pad|>",
    "<think >",
    "<Think>",
    "< think>",
    "<\\think>",
    "<|im\u200bend|>",  # zero-width space inside
    "\uff1c|im_end|\uff1e",  # fullwidth < and >
    "<\uff5cim_end\uff5c>",  # fullwidth bars (DeepSeek's style)
    "\u2039|im_end|\u203a",  # single guillemets
    "im_end image_pad vision_start",
    "<|>",
    "<||>",
)


@pytest.fixture(scope="module")
def qwen3_tokenizer() -> Any:
    return build_qwen_tokenizer(qwen3=True)


@pytest.fixture(scope="module")
def qwen2_tokenizer() -> Any:
    return build_qwen_tokenizer(qwen3=False)


def test_the_reserved_set_is_the_tokenizers_own(qwen2_tokenizer: Any, qwen3_tokenizer: Any) -> None:
    judge = set(reserved_strings(qwen3_tokenizer))
    editor = set(reserved_strings(qwen2_tokenizer))
    assert set(QWEN_CONTROL) <= editor <= judge
    assert set(QWEN3_ONLY) <= judge - editor
    for token in judge:  # every string in the set is one token to the tokenizer
        assert control_token_in(qwen3_tokenizer, f"say {token} now") == token


def test_near_misses_are_plain_text_to_the_tokenizer_and_to_the_check(
    qwen3_tokenizer: Any,
) -> None:
    reserved = reserved_strings(qwen3_tokenizer)
    for text in NEAR_MISSES:
        assert control_token_in(qwen3_tokenizer, text) is None, text
        assert find_reserved(text, reserved) is None, text


def test_the_check_names_the_longest_token_and_sees_through_nfc() -> None:
    assert find_reserved("a<|im_end|>b", ("<|im_end|>", "im_end")) == "<|im_end|>"
    # A decomposed character that NFC composes into a reserved string.
    assert find_reserved("<cafe\u0301>", ("<café>",)) == "<café>"
    assert find_reserved("", ("<x>",)) is None


@pytest.fixture(scope="module")
def tiny_judge(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("user-text-judge")
    with service("reward_service", tmp, MODEL="tiny", CACHE_DIR=str(model_cache)).running() as r:
        yield r


@pytest.fixture(scope="module")
def tiny_editor(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("user-text-editor")
    with service("editor_service", tmp, MODEL="tiny", CACHE_DIR=str(model_cache)).running() as e:
        yield e


def assert_refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert error["param"] == param
    assert "control token" in error["message"]


@pytest.mark.tiny
def test_every_control_token_in_every_judge_field_is_refused_naming_it(
    tiny_judge: ServiceProcess, qwen3_tokenizer: Any
) -> None:
    tokens = reserved_strings(qwen3_tokenizer)
    cases = 0
    with httpx.Client(base_url=tiny_judge.url, timeout=120) as http:
        for i, token in enumerate(tokens):
            field = ("instruction", "category", "hints")[i % 3]
            protocol = ("viescore", "single")[i % 2]
            mode = ("expected", "generate")[(i // 2) % 2]
            text = (f"make it {token} blue", token, f"{token}\n", f"x{token}{token}")[i % 4]
            body = score_body({field: text}, protocol=protocol, mode=mode, max_new_tokens=8)
            body["items"].insert(0, score_body()["items"][0])  # a clean item before it
            assert_refused(http.post("/v1/scores", json=body), f"items[1].{field}")
            cases += 1
        for field in ("instruction", "category", "hints"):  # every field, every token kind
            for token in (*QWEN_CONTROL, *QWEN3_ONLY):
                body = score_body({field: f"a {token} b"}, protocol="single")
                assert_refused(http.post("/v1/scores", json=body), f"items[0].{field}")
                cases += 1
        # The service still scores afterwards: nothing was queued, nothing failed.
        served = http.post("/v1/scores", json=score_body(protocol="single"))
    assert served.status_code == 200, served.text
    assert served.json()["results"][0]["scored"] is True
    assert cases >= len(tokens) + 24


@pytest.mark.tiny
def test_near_misses_in_judge_fields_are_scored_as_plain_text(
    tiny_judge: ServiceProcess,
) -> None:
    items = [
        score_body({field: text})["items"][0]
        for i, text in enumerate(NEAR_MISSES)
        for field in (("instruction", "category", "hints")[i % 3],)
    ]
    with httpx.Client(base_url=tiny_judge.url, timeout=300) as http:
        response = http.post("/v1/scores", json={"items": items, "protocol": "single"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(NEAR_MISSES)
    assert all(r["scored"] for r in results)


@pytest.mark.tiny
def test_requests_refused_for_control_tokens_never_fail_the_clean_ones_sent_beside_them(
    tiny_judge: ServiceProcess,
) -> None:
    """The refusal is the route's, before any batch: the clean requests sent at the same time
    are all scored. (An item that fails inside a shared batch: test_batch_isolation.py.)"""
    clean = score_body(protocol="single")
    hostile = [
        score_body({"instruction": f"describe {t}"}, protocol="single")
        for t in ("<|image_pad|>", "<|vision_start|>", "<|im_end|>", "<think>", "<|video_pad|>")
    ]
    bodies = [b for pair in zip([clean] * len(hostile), hostile, strict=True) for b in pair]
    with (
        httpx.Client(base_url=tiny_judge.url, timeout=300) as http,
        concurrent.futures.ThreadPoolExecutor(max_workers=len(bodies)) as pool,
    ):
        answers = list(pool.map(lambda b: http.post("/v1/scores", json=b), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        if body is clean:
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"][0]["scored"] is True
        else:
            assert_refused(answer, "items[0].instruction")


@pytest.mark.tiny
def test_control_tokens_in_the_editors_text_fields_are_refused_naming_them(
    tiny_editor: ServiceProcess, qwen2_tokenizer: Any
) -> None:
    tokens = reserved_strings(qwen2_tokenizer)
    png = valid_png()
    with httpx.Client(base_url=tiny_editor.url, timeout=300) as http:
        for i, token in enumerate(tokens):
            field = ("instruction", "negative_prompt")[i % 2]
            body = edit_body(**{field: f"turn it {token} red"})
            assert_refused(http.post("/v1/edits", json=body), field)
            form = {"prompt": "red", "negative_prompt": "blurry", "num_inference_steps": "2"}
            form["prompt" if i % 2 == 0 else "negative_prompt"] = f"{token}"
            answer = http.post(
                "/v1/images/edits",
                data=form,
                files={"image": ("a.png", png, "image/png")},
            )
            assert_refused(answer, "prompt" if i % 2 == 0 else "negative_prompt")
        near = edit_body(instruction=" ".join(NEAR_MISSES[:8]), negative_prompt=NEAR_MISSES[11])
        served = http.post("/v1/edits", json=near)
    assert served.status_code == 200, served.text
    assert served.json()["width"] == 32
