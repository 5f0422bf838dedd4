"""The openai judge backend against a real OpenAI-compatible server nobody here wrote:
``transformers serve`` running the tiny Qwen3-VL judge folder on the CPU, behind a real reward
service (``python -m reward_service``, REWARD_BACKEND=openai). transformers serve returns no
log-probabilities, so this is generate mode; the log-probability reading is tested against
recorded answers of the OpenAI API and of vLLM (test_openai_logprobs.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared_schemas import ErrorResponse, RewardInfo, ScoreResponse
from tests.support.images import b64, image_bytes
from tests.support.servers import REPO_ROOT, ServiceProcess, free_port, offline_env
from tiny_models.qwen3_vl import ensure_tiny_folder

pytestmark = pytest.mark.tiny

SECRET = "sk-editbench-test-0123456789abcdef"


@contextlib.contextmanager
def transformers_serve(folder: Path, log_path: Path) -> Iterator[str]:
    """``transformers serve FOLDER`` on a free port, on the CPU; yields its /v1 base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from transformers.cli.transformers import main; sys.argv[0] = "
        "'transformers'; sys.exit(main())",
        "serve",
        str(folder),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=offline_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited:\n{log_path.read_text()[-5000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        else:
            raise TimeoutError(f"transformers serve not up:\n{log_path.read_text()[-5000:]}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def served(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    logs = tmp_path_factory.mktemp("openai-serve-logs")
    folder = ensure_tiny_folder(model_cache, "dense")
    with transformers_serve(folder, logs / "transformers-serve.log") as base_url:
        env = {
            "REWARD_BACKEND": "openai",
            "REWARD_MODEL": str(folder),
            "REWARD_OPENAI_BASE_URL": base_url,
            "REWARD_OPENAI_API_KEY": SECRET,
            "REWARD_OPENAI_MAX_CONCURRENCY": "4",
            "REWARD_MAX_WAIT_S": "0.05",
            "REWARD_LOG_LEVEL": "debug",
        }
        service = ServiceProcess("reward_service", env, logs / "reward.log")
        with service.running() as running:
            yield running


def item(seed: int) -> dict[str, Any]:
    return {
        "id": f"item-{seed}",
        "source_image": b64(image_bytes(64, 64, seed=seed)),
        "edited_image": b64(image_bytes(64, 48, seed=seed + 100)),
        "instruction": "make the sky red",
    }


def test_info_names_the_endpoint_model_and_offers_generate_mode_only(
    served: Any, model_cache: Path
) -> None:
    folder_name = ensure_tiny_folder(model_cache, "dense").name  # the folder served above
    response = httpx.get(f"{served.url}/v1/info", timeout=10)
    assert response.status_code == 200
    info = RewardInfo.model_validate(response.json())
    assert info.model is not None
    assert info.model.source == "endpoint"
    assert info.model.meaningful is True
    assert info.model.id.endswith(folder_name)
    reported = info.model.options["endpoint_model"]
    assert isinstance(reported, str) and folder_name in reported
    assert info.modes == ["generate"]  # transformers serve returns no log-probabilities
    assert SECRET not in response.text


def test_generate_mode_scores_through_transformers_serve_with_tokens_counted(
    served: Any,
) -> None:
    body = {
        "items": [item(1), item(2)],
        "protocol": "viescore",
        "mode": "generate",
        "max_new_tokens": 12,
    }
    response = httpx.post(f"{served.url}/v1/scores", json=body, timeout=300)
    assert response.status_code == 200, response.text
    answer = ScoreResponse.model_validate(response.json())
    assert answer.model.source == "endpoint"
    for result in answer.results:
        assert len(result.questions) == 4
        for question in result.questions:
            assert question.raw_text is not None  # the endpoint's answer, verbatim
            # A random tiny judge writes gibberish: unscored with the reason, never a guess.
            assert (question.score is None) == (question.error is not None)
            assert question.usage is not None
            assert question.usage.prompt_tokens > 0
            assert 0 < question.usage.completion_tokens <= 12
    assert answer.usage is not None
    every = [q.usage for r in answer.results for q in r.questions if q.usage is not None]
    assert answer.usage.prompt_tokens == sum(u.prompt_tokens for u in every)
    assert answer.usage.completion_tokens == sum(u.completion_tokens for u in every)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert SECRET not in response.text


def test_expected_mode_is_refused_naming_mode_when_the_endpoint_has_no_logprobs(
    served: Any,
) -> None:
    response = httpx.post(
        f"{served.url}/v1/scores", json={"items": [item(3)], "mode": "expected"}, timeout=60
    )
    assert response.status_code == 400
    error = ErrorResponse.model_validate(response.json()).error
    assert error.param == "mode"
    assert "log-probabilities" in error.message


def test_the_api_key_never_reaches_the_log(served: Any) -> None:
    httpx.post(
        f"{served.url}/v1/scores",
        json={"items": [item(4)], "protocol": "single", "mode": "generate", "max_new_tokens": 8},
        timeout=120,
    )
    log = served.log()
    assert "judge endpoint" in log  # the backend did log about the endpoint...
    assert SECRET not in log  # ...without the key
