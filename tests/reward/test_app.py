"""The HTTP service in process, with a fake judge at the backend seam: routes, errors, metrics."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import math
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from reward_service.app import create_app
from reward_service.config import RewardSettings
from service_kit.app.state import service_state
from shared_schemas import (
    ErrorResponse,
    ProtocolDefinition,
    ProtocolsResponse,
    RewardInfo,
    ScoreResponse,
)
from tests.reward.metrics_text import sample
from tests.support.fake_judges import read_journal
from tests.support.images import b64, image_bytes
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

FAKE = "tests.support.fake_judges:FakeJudge"
SOURCE = b64(image_bytes(32, 32, seed=1))
EDITED = b64(image_bytes(32, 32, seed=2))


def settings(tmp_path: Path, **changes: Any) -> RewardSettings:
    return RewardSettings(
        backend=FAKE,
        devices=changes.pop("devices", ["cpu"]),
        cache_dir=tmp_path,
        backend_options=changes.pop("backend_options", {}),
        **changes,
    )


def item(instruction: str = "score=7", **changes: Any) -> dict[str, Any]:
    return {"source_image": SOURCE, "edited_image": EDITED, "instruction": instruction, **changes}


@asynccontextmanager
async def client_for(
    config: RewardSettings, *, ready: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reward") as client:
            client.app = app  # type: ignore[attr-defined]
            if ready:
                await wait_ready(client)
            yield client


# The judge replica is a process of its own: spawning and loading it (again, after a kill: with
# restart backoff) took 3-4 s of an idle 2-core machine, so waits for it are bounded by time, well
# past what a loaded machine needs, not by a count of short polls (300 of 0.02 s was 6 s).
READY_TIMEOUT_S = 60.0


async def ready_text(client: httpx.AsyncClient, done: str) -> httpx.Response:
    """Poll /ready until ``done`` is in its answer (bounded by READY_TIMEOUT_S)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        response = await client.get("/ready")
        if done in response.text or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.02)


def batch_started(journal: Path) -> bool:
    return any(e["event"] == "batch" for e in read_journal(journal))


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError((await client.get("/ready")).text)


def error_of(response: httpx.Response) -> ErrorResponse:
    return ErrorResponse.model_validate(response.json())


def new_gate(tmp_path: Path) -> Path:
    """A gate the fake judge waits behind until the test opens it (creates the file)."""
    return tmp_path / f"gate-{uuid.uuid4().hex}"


async def test_ready_is_503_until_the_judge_has_loaded(tmp_path: Path) -> None:
    gate = new_gate(tmp_path)
    config = settings(tmp_path, backend_options={"load_gate": str(gate)})
    async with client_for(config, ready=False) as client:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert error_of(response).error.type == "not_ready"
        assert response.headers["Retry-After"]
        refused = await client.post("/v1/scores", json={"items": [item()]})
        assert refused.status_code == 503
        assert (await client.get("/health")).status_code == 200
        gate.touch()
        await wait_ready(client)
        assert (await client.post("/v1/scores", json={"items": [item()]})).status_code == 200


async def test_a_judge_that_fails_to_load_keeps_the_service_up_and_says_why(
    tmp_path: Path,
) -> None:
    async with client_for(
        settings(tmp_path, backend_options={"fail_load": True}), ready=False
    ) as client:
        detail = error_of(await ready_text(client, "failed")).error.message
        assert "failed to load: RuntimeError: configured to fail while loading" in detail
        refused = await client.post("/v1/scores", json={"items": [item()]})
        assert refused.status_code == 503
        assert "failed to load" in error_of(refused).error.message


async def test_viescore_result_carries_sub_scores_sc_pq_overall_and_the_protocol_hash(
    tmp_path: Path,
) -> None:
    async with client_for(settings(tmp_path)) as client:
        response = await client.post(
            "/v1/scores", json={"items": [item("score=8", id="a"), item("score=10", id="b")]}
        )
        protocols = ProtocolsResponse.model_validate((await client.get("/v1/protocols")).json())
    assert response.status_code == 200, response.text
    body = ScoreResponse.model_validate(response.json())
    viescore_hash = next(p.hash for p in protocols.protocols if p.name == "viescore")
    first, second = body.results
    assert (first.id, second.id) == ("a", "b")
    assert [q.name for q in first.questions] == [
        "editing_success",
        "over_editing",
        "naturalness",
        "artifacts",
    ]
    assert first.protocol == "viescore" and first.protocol_hash == viescore_hash
    assert first.mode == "expected" and first.scored
    assert all(q.distribution is not None and len(q.distribution) == 11 for q in first.questions)
    assert first.sc is not None and first.pq is not None and first.overall is not None
    assert 7.5 < first.sc < 8.5 and first.overall == pytest.approx((first.sc * first.pq) ** 0.5)
    assert second.sc is not None and second.sc > 9  # "10": the two-token path
    assert first.timings.total_s >= first.timings.inference_s > 0
    assert body.model.model_class == "FakeJudge" and body.model.meaningful is False


async def test_single_protocol_gives_one_overall_score(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        response = await client.post(
            "/v1/scores", json={"items": [item("score=3")], "protocol": "single"}
        )
    assert response.status_code == 200
    [result] = ScoreResponse.model_validate(response.json()).results
    assert [q.name for q in result.questions] == ["overall"]
    assert result.sc is None and result.pq is None
    assert result.overall == pytest.approx(result.questions[0].score)


async def test_generate_mode_reads_the_score_and_keeps_the_raw_text(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        response = await client.post(
            "/v1/scores",
            json={"items": [item("score=9")], "mode": "generate", "protocol": "single"},
        )
    [result] = ScoreResponse.model_validate(response.json()).results
    assert result.scored and result.overall == 9.0
    [question] = result.questions
    assert question.raw_text is not None and question.raw_text.endswith("Score: 9")
    assert question.distribution is None and question.score_mass is None


async def test_gedit_asks_two_questions_and_answers_its_metrics_from_two_scores_each(
    tmp_path: Path,
) -> None:
    async with client_for(settings(tmp_path)) as client:
        listed = ProtocolsResponse.model_validate((await client.get("/v1/protocols")).json())
        response = await client.post(
            "/v1/scores",
            json={"items": [item("score=7")], "mode": "generate", "protocol": "gedit"},
        )
    gedit = next(p for p in listed.protocols if p.name == "gedit")
    assert gedit.modes == ["generate"] and gedit.headline == "overall"
    assert response.status_code == 200, response.text
    [result] = ScoreResponse.model_validate(response.json()).results
    assert [(q.question, q.name, q.score) for q in result.questions] == [
        ("semantics", "editing_success", 7.0),
        ("semantics", "over_editing", 7.0),
        ("quality", "naturalness", 5.0),  # GEdit's PQ prompt has no instruction: the fake's 5
        ("quality", "artifacts", 5.0),
    ]
    assert result.metrics == {"sc": 7.0, "pq": 5.0, "overall": math.sqrt(7.0 * 5.0)}
    assert result.scored and result.overall == result.metrics["overall"]


async def test_unparseable_generate_answers_are_unscored_never_guessed(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        response = await client.post(
            "/v1/scores",
            json={"items": [item("fake-junk"), item("score=6")], "mode": "generate"},
        )
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    junk, fine = ScoreResponse.model_validate(response.json()).results
    # Only the SC questions see the instruction, so only they get the junk answer.
    assert not junk.scored
    assert junk.sc is None and junk.overall is None and junk.pq == 5.0
    for question in junk.questions[:2]:
        assert question.score is None
        assert question.raw_text == "gogh</tool_response> painting ir ir"
        assert question.error == "no score found in the answer"
    assert fine.scored and fine.sc == 6.0 and fine.pq == 5.0
    assert (
        'reward_items_total{mode="generate",outcome="unscored",protocol="viescore"} 1.0' in metrics
    )
    assert 'reward_questions_total{mode="generate",outcome="unscored"} 2.0' in metrics


@pytest.mark.parametrize(
    ("body", "status", "error_type", "param"),
    [
        ({"items": [item()], "protocol": "nope"}, 400, "unknown_protocol", "protocol"),
        ({"items": [item()], "protocol": "gedit"}, 400, "invalid_input", "mode"),
        (
            {"items": [item(), item(edited_image=b64(b"GIF89a...."))]},
            422,
            "invalid_request",
            "items.1.edited_image",
        ),
        (
            {"items": [item(source_image=b64(image_bytes()[:60]))]},
            400,
            "invalid_image",
            "items[0].source_image",
        ),
        ({"items": []}, 422, "invalid_request", "items"),
        ({"items": [item()], "mode": "sample"}, 422, "invalid_request", "mode"),
        ({"items": [item(instruction="")]}, 422, "invalid_request", "items.0.instruction"),
    ],
)
async def test_bad_input_is_a_4xx_in_the_shared_envelope(
    tmp_path: Path, body: dict[str, Any], status: int, error_type: str, param: str
) -> None:
    async with client_for(settings(tmp_path)) as client:
        response = await client.post("/v1/scores", json=body)
        assert response.status_code == status, response.text
        error = error_of(response).error
        assert (error.type, error.param) == (error_type, param)
        assert (await client.post("/v1/scores", json={"items": [item()]})).status_code == 200


async def test_a_truncated_image_is_refused_naming_its_field(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        broken = b64(image_bytes(32, 32)[:80])
        response = await client.post(
            "/v1/scores", json={"items": [item(), item(edited_image=broken)]}
        )
    assert response.status_code == 400
    assert error_of(response).error.param == "items[1].edited_image"


async def test_an_image_with_too_many_pixels_is_413(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path, max_image_pixels=32 * 32)) as client:
        big = b64(image_bytes(64, 64))
        response = await client.post("/v1/scores", json={"items": [item(edited_image=big)]})
    assert response.status_code == 413
    error = error_of(response).error
    assert error.type == "image_too_large" and error.param == "items[0].edited_image"


async def test_scores_return_429_with_retry_after_when_the_queue_is_full(tmp_path: Path) -> None:
    gate, journal = new_gate(tmp_path), tmp_path / "journal"
    options = {"batch_gate": str(gate), "journal": str(journal)}
    config = settings(tmp_path, queue_capacity=1, backend_options=options)
    async with client_for(config) as client:
        running = asyncio.create_task(client.post("/v1/scores", json={"items": [item()]}))
        await until(lambda: batch_started(journal), "a first batch on the judge")
        # The replica takes a second batch (prepared while the first runs); the third waits.
        prepared = asyncio.create_task(client.post("/v1/scores", json={"items": [item()]}))
        queue = service_state(client.app).dispatch().queue  # type: ignore[attr-defined]
        await until(lambda: queue._in_flight >= 2, "a second batch taken beside the first")
        queued = asyncio.create_task(client.post("/v1/scores", json={"items": [item()]}))
        await until(lambda: queue.depth >= 1, "a third request waiting in the queue")
        refused = await client.post("/v1/scores", json={"items": [item()]})
        assert refused.status_code == 429
        assert error_of(refused).error.type == "queue_full"
        assert int(refused.headers["Retry-After"]) >= 1
        gate.touch()
        statuses = [(await task).status_code for task in (running, prepared, queued)]
        assert statuses == [200, 200, 200]
        metrics = (await client.get("/metrics")).text
    assert 'reward_rejected_total{reason="queue_full"} 1.0' in metrics


async def test_a_request_with_more_items_than_the_queue_holds_is_413(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path, queue_capacity=1)) as client:
        response = await client.post("/v1/scores", json={"items": [item(), item()]})
    assert response.status_code == 413
    assert "2 items" in error_of(response).error.message


@pytest.mark.parametrize(
    ("instruction", "status", "error_type"),
    [
        ("fake-crash", 500, "backend_error"),
        ("fake-oom", 507, "out_of_memory"),
        ("fake-short", 500, "backend_error"),
    ],
)
async def test_a_failed_batch_answers_its_request_and_the_service_keeps_serving(
    tmp_path: Path, instruction: str, status: int, error_type: str
) -> None:
    async with client_for(settings(tmp_path)) as client:
        failed = await client.post("/v1/scores", json={"items": [item(instruction)]})
        assert failed.status_code == status
        assert error_of(failed).error.type == error_type
        assert "Traceback" not in failed.text
        assert (await client.post("/v1/scores", json={"items": [item()]})).status_code == 200


async def test_the_model_is_only_ever_touched_from_one_thread(tmp_path: Path) -> None:
    gate, journal = new_gate(tmp_path), tmp_path / "journal"
    options = {"batch_gate": str(gate), "journal": str(journal)}
    config = settings(tmp_path, max_batch_images=9, backend_options=options)
    async with client_for(config) as client:
        requests = [
            asyncio.create_task(
                client.post("/v1/scores", json={"items": [item(f"score={i % 11}")]})
            )
            for i in range(12)
        ]
        # The first batch holds the model until a full one waits beside it (sent at once, the
        # items could trickle in more than max_wait_s apart on a loaded machine and leave in
        # smaller batches).
        queue = service_state(client.app).dispatch().queue  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while queue._in_flight < 2:
            assert time.monotonic() < deadline, "no full batch was taken while the model was held"
            await asyncio.sleep(0.01)
        gate.touch()
        responses = await asyncio.gather(*requests)
    assert all(r.status_code == 200 for r in responses)
    batches = [e for e in read_journal(journal) if e["event"] == "batch"]
    assert len({(e["pid"], e["thread"]) for e in batches}) == 1
    assert not any(e["overlapped"] for e in batches)
    assert max(e["size"] for e in batches) == 12  # 3 viescore items of 3 images: 12 questions


async def test_protocols_are_listed_and_each_definition_hashes_to_its_hash(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "protocols"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "physics_judge.yaml", folder)
    async with client_for(settings(tmp_path, protocols_dir=folder)) as client:
        listed = ProtocolsResponse.model_validate((await client.get("/v1/protocols")).json())
        definitions = [
            ProtocolDefinition.model_validate((await client.get(f"/v1/protocols/{p.name}")).json())
            for p in listed.protocols
        ]
        missing = await client.get("/v1/protocols/nope")
    names = [p.name for p in listed.protocols]
    assert names == sorted(names) and {"physics-judge", "gedit", "single", "viescore"} <= set(names)
    for definition in definitions:
        canonical = json.dumps(
            definition.definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert hashlib.sha256(canonical.encode()).hexdigest() == definition.info.hash
    assert missing.status_code == 404
    # Which metrics apply to which categories, on the wire: absent-by-design is not unscored.
    by_name = {p.name: p for p in listed.protocols}
    kris = by_name["kris"]
    assert "knowledge" in kris.metrics_for("physics")
    assert "knowledge" not in kris.metrics_for("color_change")
    assert [s.categories is None for s in kris.question_sets].count(True) == 1
    assert by_name["rise"].metrics_for("logical_reasoning")[:2] == [
        "logical_consistency",
        "logical_reasoning",
    ]
    assert by_name["kris-knowledge"].superseded_by == "kris"
    assert by_name["rise-logical"].superseded_by == "rise"
    assert by_name["viescore"].question_sets == [] and by_name["viescore"].superseded_by is None


async def test_info_reports_the_model_limits_queue_and_protocols(tmp_path: Path) -> None:
    config = settings(tmp_path, max_batch_images=5, max_wait_s=0.2, queue_capacity=50)
    async with client_for(config) as client:
        info = RewardInfo.model_validate((await client.get("/v1/info")).json())
    assert info.service == "reward" and info.devices == ["cpu"]
    assert info.model is not None and info.model.id == "fake:tiny"
    assert (info.max_batch_images, info.max_wait_s, info.queue_capacity) == (5, 0.2, 50)
    assert info.queue_depth == 0 and {"gedit", "single", "viescore"} <= set(info.protocols)


async def test_metrics_count_batches_items_and_queue(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        await client.post("/v1/scores", json={"items": [item()]})
        metrics = (await client.get("/metrics")).text
    assert "reward_batch_size_count" in metrics and "reward_batch_size_sum 1.0" in metrics
    assert 'reward_items_total{mode="expected",outcome="scored",protocol="viescore"} 1.0' in metrics
    assert "reward_queue_depth 0.0" in metrics
    assert "reward_score_mass_count 4.0" in metrics


async def test_openapi_docs_are_served(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        docs = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
    assert docs.status_code == 200
    paths = {
        "/v1/scores",
        "/v1/protocols",
        "/v1/protocols/{name}",
        "/v1/info",
        "/ready",
        "/metrics",
    }
    assert paths <= schema["paths"].keys()
    # The judge is configurable (any Qwen-VL model, or an endpoint's): the summary names none.
    assert "OpenAI-compatible endpoint" in schema["info"]["summary"]
    assert "Qwen3-VL judge" not in schema["info"]["summary"]


async def test_a_client_request_id_is_echoed_and_a_missing_one_is_made(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        given = await client.post(
            "/v1/scores", json={"items": [item()]}, headers={"X-Request-ID": "job-42"}
        )
        made = await client.post("/v1/scores", json={"items": [item()]})
    assert given.headers["X-Request-ID"] == "job-42"
    assert made.headers["X-Request-ID"].startswith("req-")


async def test_two_replicas_share_the_questions_each_in_its_own_process(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    options = {"batch_delay_s": 0.2, "journal": str(journal)}
    config = settings(tmp_path, devices=["cpu", "cpu"], max_batch_images=1, backend_options=options)
    async with client_for(config) as client:
        body = {"items": [item()], "protocol": "single"}
        responses = await asyncio.gather(*(client.post("/v1/scores", json=body) for _ in range(8)))
        assert {r.status_code for r in responses} == {200}
        info = RewardInfo.model_validate((await client.get("/v1/info")).json())
        metrics = (await client.get("/metrics")).text
    assert info.devices == ["cpu", "cpu"]
    batches = [e for e in read_journal(journal) if e["event"] == "batch"]
    per_process = collections.Counter(e["pid"] for e in batches)
    assert sum(per_process.values()) == 8 and len(per_process) == 2  # both replicas worked
    # The metrics show the same spread, per replica.
    per_replica = {
        replica: sample(metrics, "reward_replica_batches_total", replica=replica, device="cpu")
        for replica in ("0", "1")
    }
    assert sorted(per_replica.values()) == sorted(per_process.values())
    assert len({(e["pid"], e["thread"]) for e in batches}) == 2  # one model thread each
    assert not any(e["overlapped"] for e in batches)


async def test_release_and_load_hand_the_device_over_and_back(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path)) as client:
        released = await client.post("/v1/model/release")
        assert released.status_code == 200 and released.json()["loaded"] is False
        assert (await client.get("/ready")).status_code == 503
        refused = await client.post("/v1/scores", json={"items": [item()]})
        assert refused.status_code == 503
        assert "released" in error_of(refused).error.message
        loaded = await client.post("/v1/model/load")
        assert loaded.status_code == 200 and loaded.json()["loaded"] is True
        assert (await client.post("/v1/scores", json={"items": [item()]})).status_code == 200


async def test_a_service_started_without_its_model_loads_on_request(tmp_path: Path) -> None:
    async with client_for(settings(tmp_path, load_on_start=False), ready=False) as client:
        ready = await ready_text(client, "released")
        assert ready.status_code == 503 and "released" in ready.text
        assert (await client.post("/v1/model/load")).status_code == 200
        await wait_ready(client)
        assert (await client.post("/v1/scores", json={"items": [item()]})).status_code == 200


async def test_a_killed_judge_worker_fails_its_batch_and_comes_back(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    options = {"batch_delay_s": 3, "journal": str(journal)}
    async with client_for(settings(tmp_path, backend_options=options)) as client:
        running = asyncio.create_task(client.post("/v1/scores", json={"items": [item()]}))
        await until(lambda: batch_started(journal), "a first batch on the judge")
        victim = service_state(client.app).dispatch().replicas[0].pid  # type: ignore[attr-defined]
        os.kill(victim, signal.SIGKILL)
        died = await running
        assert died.status_code == 503
        assert error_of(died).error.type == "worker_died" and "Retry-After" in died.headers
        await wait_ready(client)
        replica = service_state(client.app).dispatch().replicas[0]  # type: ignore[attr-defined]
        assert replica.pid != victim and replica.restarts == 1
        body = {"items": [item()], "protocol": "single"}
        assert (await client.post("/v1/scores", json=body)).status_code == 200
        text = (await client.get("/metrics")).text
        labels = {"replica": "0", "device": "cpu"}
        assert sample(text, "reward_replica_restarts_total", **labels) == 1
        assert sample(text, "reward_replica_state", state="ready", **labels) == 1
        assert sample(text, "reward_replica_state", state="restarting", **labels) == 0
