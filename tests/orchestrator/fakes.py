"""Scripted editor and reward services behind one ``httpx.MockTransport``, counting every call.

For tests about the orchestrator's HTTP behaviour (retries, resume, batching, concurrency); the
real services on tiny models are exercised in the ``tiny`` tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from shared_schemas import (
    EditorInfo,
    EditRequest,
    EditResponse,
    EditTimings,
    ErrorInfo,
    ErrorResponse,
    ItemScore,
    MetricInfo,
    ModelInfo,
    ProtocolInfo,
    ProtocolQuestion,
    ProtocolsResponse,
    QuestionScore,
    ReadyResponse,
    RewardInfo,
    ScoreRequest,
    ScoreResponse,
    ScoreTimings,
    TokenUsage,
    WorkerInfo,
)
from shared_schemas.scores import ProtocolDefinition

EDITOR = "http://editor.test"
REWARD = "http://reward.test"

EDITOR_MODEL = ModelInfo(
    id="fake-editor",
    source="local",
    revision="rev1",
    model_class="Fake",
    dtype="none",
    meaningful=False,
)
JUDGE_MODEL = ModelInfo(
    id="fake-judge",
    source="local",
    revision="rev1",
    model_class="Fake",
    dtype="none",
    meaningful=False,
)
PROTOCOL = ProtocolInfo(
    name="viescore",
    hash="sha256:protocol-v1",
    description="fake",
    questions=[
        ProtocolQuestion(name="editing_success", group="sc", images=["source", "edited"]),
        ProtocolQuestion(name="naturalness", group="pq", images=["edited"]),
    ],
    metrics=[
        MetricInfo(name="sc", label="SC", rule="min(editing_success)"),
        MetricInfo(name="pq", label="PQ", rule="min(naturalness)"),
        MetricInfo(name="overall", label="Overall", rule="geometric_mean(sc, pq)"),
    ],
    headline="overall",
    source="builtin",
)

Handler = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


def error(
    status: int, error_type: str, message: str, retry_after: str | None = None
) -> httpx.Response:
    body = ErrorResponse(error=ErrorInfo(type=error_type, message=message)).model_dump(mode="json")
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(status, json=body, headers=headers)


def fake_score(key: str) -> float:
    return round(int(hashlib.sha256(key.encode()).hexdigest()[:4], 16) / 65535 * 10, 3)


@dataclass
class FakeServices:
    """Both services. ``before_edit``/``before_score`` may answer instead (return a Response)."""

    workers: int = 2
    max_in_flight: int = 6
    max_batch_images: int = 16
    edit_delay_s: float = 0.0
    before_edit: Handler | None = None
    before_score: Handler | None = None
    judge_usage: TokenUsage | None = None  # per question, as a remote judge endpoint reports
    ready: bool = True
    calls: Counter[str] = field(default_factory=Counter)
    edited_instructions: list[str] = field(default_factory=list)
    scored_batches: list[list[str]] = field(default_factory=list)
    in_flight: int = 0
    max_seen_in_flight: int = 0
    # Added to the SC of an item by its category (another "model" for compare tests), kept in 0-10.
    sc_shift: Callable[[str], float] = field(default=lambda _category: 0.0)
    # Another judge: the model it reports, and a salt that gives it its own item scores.
    judge_model: ModelInfo = JUDGE_MODEL
    judge_salt: str = ""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        service = "editor" if request.url.host == "editor.test" else "reward"
        self.calls[f"{service} {request.method} {path}"] += 1
        if path == "/ready":
            if not self.ready:
                return error(503, "not_ready", "loading")
            return httpx.Response(
                200,
                json=ReadyResponse(
                    ready=True, detail="ok", workers_ready=self.workers, workers_total=self.workers
                ).model_dump(mode="json"),
            )
        if service == "editor" and path == "/v1/info":
            return httpx.Response(200, json=self.editor_info().model_dump(mode="json"))
        if service == "reward" and path == "/v1/info":
            return httpx.Response(
                200,
                json=RewardInfo(
                    version="0",
                    model=self.judge_model,
                    devices=["cpu"],
                    max_batch_images=self.max_batch_images,
                    max_wait_s=0.01,
                    queue_capacity=16,
                    queue_depth=0,
                    protocols=["viescore"],
                    client_in_flight={"viescore": 16},
                ).model_dump(mode="json"),
            )
        if service == "reward" and path == "/v1/protocols":
            return httpx.Response(
                200, json=ProtocolsResponse(protocols=[PROTOCOL]).model_dump(mode="json")
            )
        if service == "reward" and path == "/v1/protocols/viescore":
            definition = ProtocolDefinition(info=PROTOCOL, definition={"system": "You judge."})
            return httpx.Response(200, json=definition.model_dump(mode="json"))
        if path == "/v1/edits":
            return await self._edit(request)
        if path == "/v1/scores":
            return await self._score(request)
        return error(404, "not_found", path)

    def editor_info(self) -> EditorInfo:
        return EditorInfo(
            version="0",
            model=EDITOR_MODEL,
            devices=["cpu"] * self.workers,
            workers=[
                WorkerInfo(index=i, device="cpu", state="ready", pid=1, jobs_done=0, restarts=0)
                for i in range(self.workers)
            ],
            queue_capacity=self.max_in_flight - self.workers,
            queue_depth=0,
            max_in_flight=self.max_in_flight,
            # What a real editor's admission queue publishes: a job running on every worker
            # and the next waiting for each, within what it admits.
            client_in_flight=min(2 * self.workers, self.max_in_flight),
        )

    async def _edit(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
        try:
            if self.before_edit is not None:
                answer = await self.before_edit(request)
                if answer is not None:
                    return answer
            body = EditRequest.model_validate_json(request.content)
            if self.edit_delay_s:
                await asyncio.sleep(self.edit_delay_s)
            self.edited_instructions.append(body.instruction)
            response = EditResponse(
                image=body.image,
                output_format="png",
                width=64,
                height=64,
                seed=body.seed if body.seed is not None else 7,
                num_inference_steps=body.num_inference_steps or 50,  # Qwen's default
                true_cfg_scale=body.true_cfg_scale,
                negative_prompt=body.negative_prompt,
                worker=0,
                device="cpu",
                model=EDITOR_MODEL,
                timings=EditTimings(queue_wait_s=0, edit_s=0.01, pipeline_s=0.01, total_s=0.01),
            )
            return httpx.Response(200, content=response.model_dump_json())
        finally:
            self.in_flight -= 1

    async def _score(self, request: httpx.Request) -> httpx.Response:
        if self.before_score is not None:
            answer = await self.before_score(request)
            if answer is not None:
                return answer
        body = ScoreRequest.model_validate_json(request.content)
        self.scored_batches.append([item.instruction for item in body.items])
        results = []
        for item in body.items:
            unscored = "unparseable" in item.instruction
            sc = (
                None
                if unscored
                else max(
                    0.0,
                    min(
                        10.0,
                        fake_score("sc" + self.judge_salt + item.instruction)
                        + self.sc_shift(item.category or ""),
                    ),
                )
            )
            pq = None if unscored else fake_score("pq" + self.judge_salt + item.instruction)
            # The protocol's rule, computed by the (fake) judge as the real one does.
            overall = None if sc is None or pq is None else math.sqrt(sc * pq)
            results.append(
                ItemScore(
                    id=item.id,
                    protocol=body.protocol,
                    protocol_hash=PROTOCOL.hash,
                    mode=body.mode,
                    questions=[
                        QuestionScore(
                            name="editing_success",
                            group="sc",
                            score=sc,
                            error="no score in the answer" if unscored else None,
                            usage=self.judge_usage,
                        ),
                        QuestionScore(
                            name="naturalness", group="pq", score=pq, usage=self.judge_usage
                        ),
                    ],
                    metrics={"sc": sc, "pq": pq, "overall": overall},
                    sc=sc,
                    pq=pq,
                    overall=overall,
                    scored=not unscored,
                    timings=ScoreTimings(
                        queue_wait_s=0,
                        inference_s=0.01 * len(body.items),
                        total_s=0.01,
                        batch_items=len(body.items),
                    ),
                )
            )
        return httpx.Response(
            200, content=ScoreResponse(results=results, model=self.judge_model).model_dump_json()
        )

    def count(self, key: str) -> int:
        return self.calls[key]


def instruction_of(request: httpx.Request) -> str:
    return str(json.loads(request.content)["instruction"])
