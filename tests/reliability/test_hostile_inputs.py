"""Hundreds of malformed and hostile images and payloads against both services, over real HTTP.

Every answer must be a 4xx in the error envelope (or a 2xx where the input is valid, however odd);
no worker may die, memory may not grow past a generous bound, and the service must still serve a
valid request at the end. The corpus is built by code in tests/support/hostile.py.

The editor runs the mirror fake at the backend seam: decoding and every check happen in the API
process, the same code with any backend, and 100 real edits would cost minutes of CPU. The few
inputs that reach a model in a way the fake cannot show (odd shapes, odd text) go through the real
tiny editor too. The judge runs its real tiny model throughout (a score takes ~0.2 s on a CPU).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from shared_schemas import (
    EditorInfo,
    EditResponse,
    ErrorResponse,
    OpenAIImagesResponse,
    ScoreResponse,
)
from tests.support.hostile import (
    LIMITS,
    HostileRequest,
    edit_body,
    editor_requests,
    form_fields,
    image_cases,
    multipart,
    reward_requests,
    score_body,
    valid_png,
)
from tests.support.proctree import descendants, peak_rss_bytes, tree_rss_bytes
from tests.support.servers import ServiceProcess

FAKE_EDITOR = "tests.support.fake_editors:MirrorEditBackend"
MEMORY_GROWTH_BOUND = 300 * 2**20

ANSWERS: dict[str, type[BaseModel]] = {
    "/v1/edits": EditResponse,
    "/v1/images/edits": OpenAIImagesResponse,
    "/v1/scores": ScoreResponse,
}


def service(module: str, tmp_path: Path, **settings: str) -> ServiceProcess:
    prefix = "EDITOR" if module == "editor_service" else "REWARD"
    env = {"DEVICES": "cpu", "CACHE_DIR": str(tmp_path), **LIMITS, **settings}
    return ServiceProcess(
        module, {f"{prefix}_{k}": v for k, v in env.items()}, tmp_path / f"{module}.log"
    )


@pytest.fixture(scope="module")
def fake_editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("hostile-editor")
    with service("editor_service", tmp, BACKEND=FAKE_EDITOR).running() as editor:
        yield editor


@pytest.fixture(scope="module")
def tiny_reward(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("hostile-reward")
    with service("reward_service", tmp, MODEL="tiny", CACHE_DIR=str(model_cache)).running() as r:
        yield r


def problem_with(request: HostileRequest, response: httpx.Response) -> str | None:
    """What is wrong with the answer to one case, or None."""
    status = response.status_code
    if status >= 500:
        return f"{status} (server error): {response.text[:300]}"
    if request.expect == "ok":
        if not 200 <= status < 300:
            return f"expected 2xx for a valid input, got {status}: {response.text[:300]}"
        answer = ANSWERS.get(request.path)
        if answer is not None:
            try:
                answer.model_validate(response.json())
            except (ValidationError, json.JSONDecodeError) as exc:
                return f"2xx answer does not match {answer.__name__}: {exc}"
        return None
    if not 400 <= status < 500:
        return f"expected 4xx, got {status}: {response.text[:300]}"
    if request.status is not None and status != request.status:
        return f"expected {request.status}, got {status}: {response.text[:300]}"
    if "Traceback" in response.text:
        return "a traceback in the answer"
    try:
        ErrorResponse.model_validate(response.json())
    except (ValidationError, json.JSONDecodeError):
        return f"{status} answer is not the error envelope: {response.text[:300]}"
    return None


def send_all(url: str, requests: list[HostileRequest]) -> tuple[list[str], dict[str, int]]:
    """Send every case in order; return the failures (one line each) and the status counts."""
    failures: list[str] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for request in requests:
            try:
                response = client.request(
                    request.method, request.path, content=request.body, headers=request.headers
                )
            except httpx.HTTPError as exc:
                failures.append(f"{request.name}: no answer ({type(exc).__name__}: {exc})")
                continue
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            problem = problem_with(request, response)
            if problem is not None:
                failures.append(f"{request.name}: {problem}")
    return failures, statuses


def report(failures: list[str], total: int) -> str:
    return f"{len(failures)} of {total} hostile inputs were mishandled:\n" + "\n".join(failures)


def memory_growth(before: int, after: int) -> str:
    return f"{before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB"


def test_the_corpus_holds_hundreds_of_distinct_hostile_inputs() -> None:
    editor, reward = editor_requests(), reward_requests()
    assert len(image_cases()) >= 150
    assert len({r.name for r in editor + reward}) == len(editor) + len(reward) >= 600
    assert sum(r.expect == "refused" for r in editor + reward) >= 450


def test_every_hostile_input_to_the_editor_is_refused_cleanly_and_no_worker_dies(
    fake_editor: ServiceProcess,
) -> None:
    url, pid = fake_editor.url, fake_editor.process.pid  # type: ignore[union-attr]
    warm = httpx.post(f"{url}/v1/edits", json=edit_body(), timeout=60)
    assert warm.status_code == 200, warm.text
    info_before = EditorInfo.model_validate(httpx.get(f"{url}/v1/info", timeout=10).json())
    processes_before = descendants(pid)
    rss_before, peak_before = tree_rss_bytes(pid), peak_rss_bytes(pid)

    requests = editor_requests()
    failures, statuses = send_all(url, requests)

    assert not failures, report(failures, len(requests))
    info_after = EditorInfo.model_validate(httpx.get(f"{url}/v1/info", timeout=10).json())
    assert [(w.pid, w.restarts) for w in info_after.workers] == [
        (w.pid, w.restarts) for w in info_before.workers
    ]
    assert descendants(pid) == processes_before
    rss_after, peak_after = tree_rss_bytes(pid), peak_rss_bytes(pid)
    assert rss_after - rss_before < MEMORY_GROWTH_BOUND, memory_growth(rss_before, rss_after)
    assert peak_after - peak_before < MEMORY_GROWTH_BOUND, memory_growth(peak_before, peak_after)
    assert httpx.post(f"{url}/v1/edits", json=edit_body(), timeout=60).status_code == 200
    assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
    assert info_after.queue_depth == 0
    print(
        f"editor: {len(requests)} cases {statuses}, tree RSS {memory_growth(rss_before, rss_after)}"
        f", API peak {memory_growth(peak_before, peak_after)}"
    )


@pytest.mark.tiny
def test_every_hostile_input_to_the_judge_is_refused_cleanly_and_no_worker_dies(
    tiny_reward: ServiceProcess,
) -> None:
    url, pid = tiny_reward.url, tiny_reward.process.pid  # type: ignore[union-attr]
    warm = httpx.post(f"{url}/v1/scores", json=score_body(), timeout=60)
    assert warm.status_code == 200, warm.text
    processes_before = descendants(pid)
    rss_before, peak_before = tree_rss_bytes(pid), peak_rss_bytes(pid)

    requests = reward_requests()
    failures, statuses = send_all(url, requests)

    assert not failures, report(failures, len(requests))
    assert descendants(pid) == processes_before
    rss_after, peak_after = tree_rss_bytes(pid), peak_rss_bytes(pid)
    assert rss_after - rss_before < MEMORY_GROWTH_BOUND, memory_growth(rss_before, rss_after)
    assert peak_after - peak_before < MEMORY_GROWTH_BOUND, memory_growth(peak_before, peak_after)
    assert httpx.post(f"{url}/v1/scores", json=score_body(), timeout=60).status_code == 200
    assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
    print(
        f"judge: {len(requests)} cases {statuses}, tree RSS {memory_growth(rss_before, rss_after)}"
        f", API peak {memory_growth(peak_before, peak_after)}"
    )


REACH_THE_MODEL = {
    "edits-png-1x1",
    "edits-png-1x100-at-aspect-limit",
    "form-png-100x1-at-aspect-limit",
    "edits-shape-1x101-beyond-aspect-limit",
    "edits-shape-300x1",
    "edits-instruction-control-and-nul",
    "edits-instruction-emoji-and-rtl",
}


@pytest.fixture(scope="module")
def tiny_editor(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("hostile-tiny-editor")
    with service("editor_service", tmp, MODEL="tiny", CACHE_DIR=str(model_cache)).running() as e:
        yield e


@pytest.mark.tiny
def test_odd_shapes_and_odd_text_reach_the_real_tiny_editor_or_are_refused_before_it(
    tiny_editor: ServiceProcess,
) -> None:
    """What the mirror fake cannot show: the real pipeline on the thinnest images allowed (its
    text encoder's processor refuses beyond 200:1) and on control characters and mixed scripts."""
    requests = [r for r in editor_requests() if r.name in REACH_THE_MODEL]
    assert {r.name for r in requests} == REACH_THE_MODEL
    pid = tiny_editor.process.pid  # type: ignore[union-attr]
    processes_before = descendants(pid)

    failures, _ = send_all(tiny_editor.url, requests)

    assert not failures, report(failures, len(requests))
    assert descendants(pid) == processes_before
    # Every job that reached a worker ran to the end: the refused shapes never got there.
    served = sum(r.expect == "ok" for r in requests)
    metrics = httpx.get(f"{tiny_editor.url}/metrics", timeout=10).text
    outcomes = [line for line in metrics.splitlines() if line.startswith("editor_jobs_total{")]
    assert outcomes == [f'editor_jobs_total{{outcome="ok"}} {served}.0'], outcomes


@pytest.mark.tiny
def test_an_instruction_beyond_the_models_text_positions_is_refused_not_failed(
    tiny_editor: ServiceProcess,
) -> None:
    # Within the schema's 4000 characters, but one token per digit: with the source image's
    # tokens that is more text positions than the transformer has.
    body = edit_body(instruction="0" * 4000)
    response = httpx.post(f"{tiny_editor.url}/v1/edits", json=body, timeout=300)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "instruction"
    assert "at most 1024" in error["message"]


@pytest.mark.tiny
def test_a_form_prompt_beyond_the_models_text_positions_is_refused_naming_it_whatever_n(
    tiny_editor: ServiceProcess,
) -> None:
    # The same refusal, from the worker, on the form route, whose n images run as concurrent
    # tasks: their failure must reach the client as the refusal (400), never a 500.
    body, headers = multipart(form_fields(valid_png(), prompt="0" * 4000, n="2"))
    response = httpx.post(
        f"{tiny_editor.url}/v1/images/edits", content=body, headers=headers, timeout=300
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    # Named as the form names it (the JSON route's field is instruction).
    assert error["param"] == "prompt"
    assert error["message"].startswith("prompt is 4000 tokens long")
    assert "at most 1024" in error["message"]
