"""An upstream judge is untrusted input, and its key stays secret: the real reward service
(``REWARD_BACKEND=openai``) in front of a real, misbehaving OpenAI-compatible endpoint on loopback
(tests/support/fake_openai_judge.py).

- One question the endpoint always fails (500s, a trickle past the deadline, a 100 MB answer)
  fails only its client's request; other clients batched with it are scored.
- A trickling endpoint is cut at the documented end-to-end deadline, not a per-read timeout.
- NaN, inf, positive or non-numeric log-probabilities leave a question unscored, with the
  reason; negative or absurd token usage is left out, never a 500.
- The key never reaches an answer, /v1/info or the log: not in an error message longer than the
  cut, not in the HTTP reason phrase, not as the reported model, not in an answer's text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.services import EDITED, SOURCE, error_type
from tests.support.fake_openai_judge import TRICKLE_LIMIT_S, FakeJudgeEndpoint
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.anyio

SECRET = "sk-hidden-corpus-key-0123456789abcdef"
TIMEOUT_S = 3  # REWARD_OPENAI_TIMEOUT_S: one try, end to end


def body(*instructions: str, mode: str = "expected") -> dict[str, Any]:
    items = [
        {"source_image": SOURCE, "edited_image": EDITED, "instruction": text}
        for text in instructions
    ]
    return {"items": items, "protocol": "single", "mode": mode, "max_new_tokens": 16}


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, Path]]:
    """The service in front of an endpoint that reports the key as its model name."""
    tmp = tmp_path_factory.mktemp("untrusted")
    with FakeJudgeEndpoint(model_name="echo-key").running() as endpoint:
        env = {
            "REWARD_BACKEND": "openai",
            "REWARD_MODEL": "fake-judge",
            "REWARD_OPENAI_BASE_URL": endpoint.base_url,
            "REWARD_OPENAI_API_KEY": SECRET,
            "REWARD_OPENAI_TIMEOUT_S": str(TIMEOUT_S),
            "REWARD_OPENAI_MAX_RETRIES": "1",
            "REWARD_OPENAI_MAX_ANSWER_BYTES": str(1024 * 1024),
            "REWARD_MAX_WAIT_S": "1.0",
            "REWARD_CACHE_DIR": str(tmp / "cache"),
        }
        log = tmp / "reward.log"
        service = ServiceProcess("reward_service", env, log)
        with service.running(ready_timeout_s=120):
            yield service, log


def results(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["results"]
    return found


async def test_a_question_the_endpoint_always_fails_fails_only_its_clients_request(
    judge: tuple[ServiceProcess, Path],
) -> None:
    service, _ = judge
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        innocent = http.post("/v1/scores", json=body("score=3", "score=8"))
        guilty = http.post("/v1/scores", json=body("always-500"))
        other = http.post("/v1/scores", json=body("score=6"))
        scored, failed, also = await asyncio.gather(innocent, guilty, other)
    assert [round(r["overall"]) for r in results(scored)] == [3, 8]
    assert [round(r["overall"]) for r in results(also)] == [6]
    assert failed.status_code == 503, failed.text
    assert error_type(failed) == "upstream_unavailable"
    assert failed.json()["error"]["retryable"] is True


async def test_a_trickling_endpoint_is_cut_at_the_end_to_end_deadline_and_only_its_item_fails(
    judge: tuple[ServiceProcess, Path],
) -> None:
    service, _ = judge
    # The endpoint trickles for TRICKLE_LIMIT_S; a per-read timeout would wait it out (twice,
    # with a retry): the client's own timeout is well under that.
    assert TRICKLE_LIMIT_S > 4 * TIMEOUT_S
    async with httpx.AsyncClient(base_url=service.url, timeout=TRICKLE_LIMIT_S / 2) as http:
        slow = http.post("/v1/scores", json=body("trickle"))
        other = http.post("/v1/scores", json=body("score=5"))
        cut, scored = await asyncio.gather(slow, other)
    assert [round(r["overall"]) for r in results(scored)] == [5]
    assert cut.status_code == 503, cut.text
    assert f"within {TIMEOUT_S}s" in cut.json()["error"]["message"]


async def test_an_answer_over_the_size_bound_is_not_read_and_fails_only_its_item(
    judge: tuple[ServiceProcess, Path],
) -> None:
    service, _ = judge
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        huge, scored = await asyncio.gather(
            http.post("/v1/scores", json=body("huge-answer")),
            http.post("/v1/scores", json=body("score=2")),
        )
    assert [round(r["overall"]) for r in results(scored)] == [2]
    assert huge.status_code == 502, huge.text
    assert error_type(huge) == "upstream_error"
    assert "larger than 1048576 bytes" in huge.json()["error"]["message"]


@pytest.mark.parametrize("value", ["nan", "inf", "positive", "text"])
async def test_log_probabilities_that_are_not_probabilities_leave_the_question_unscored(
    judge: tuple[ServiceProcess, Path], value: str
) -> None:
    service, _ = judge
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        response = await http.post("/v1/scores", json=body(f"logprob={value} score=9", "score=4"))
    bad, good = results(response)
    assert bad["scored"] is False and bad["overall"] is None
    assert "not a probability" in bad["questions"][0]["error"]
    assert good["scored"] is True and round(good["overall"]) == 4


@pytest.mark.parametrize("value", ["negative", "huge"])
async def test_token_usage_that_is_not_a_count_is_left_out(
    judge: tuple[ServiceProcess, Path], value: str
) -> None:
    service, _ = judge
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        response = await http.post("/v1/scores", json=body(f"usage={value} score=6"))
    [item] = results(response)
    assert round(item["overall"]) == 6
    assert item["questions"][0]["usage"] is None


@pytest.mark.parametrize(
    ("instruction", "mode"),
    [("echo-key-late", "expected"), ("echo-key-reason", "expected"), ("echo-key-text", "generate")],
)
async def test_the_key_never_reaches_an_answer_info_or_the_log(
    judge: tuple[ServiceProcess, Path], instruction: str, mode: str
) -> None:
    service, log = judge
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
        response = await http.post("/v1/scores", json=body(instruction, mode=mode))
        info = await http.get("/v1/info")
    assert response.status_code == 200, response.text
    assert info.status_code == 200
    [item] = response.json()["results"]
    if instruction != "echo-key-text":
        assert (
            item["scored"] is False
            and "refused this question (400)" in item["questions"][0]["error"]
        )
    for text in (response.text, info.text, log.read_text(errors="replace")):
        for piece in (SECRET, SECRET[:16], SECRET[-16:]):
            assert piece not in text
