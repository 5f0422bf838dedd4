"""Fair admission, not only fair order (issue 31, class 1), on both services as real processes
with the fault fakes at the backend seam: one client that fills every queue slot cannot get a
teammate's single request refused, is held to its share while the teammate waits, and the
teammate's work is the next to start, not after the first client's next job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from service_kit.http.client_identity import CLIENT_HEADER
from shared_schemas import EditorInfo, RewardInfo
from tests.reliability.services import EDITED, SOURCE, service_process
from tests.support.fake_judges import read_journal
from tests.support.waiting import until

A = {CLIENT_HEADER: "alice/run-a"}
B = {CLIENT_HEADER: "bob/run-b"}


def edit(instruction: str) -> dict[str, Any]:
    return {"image": SOURCE, "instruction": instruction, "num_inference_steps": 2, "seed": 1}


def score(instruction: str) -> dict[str, Any]:
    item = {"source_image": SOURCE, "edited_image": EDITED, "instruction": instruction}
    return {"items": [item], "protocol": "single"}


def test_editor_admits_and_starts_a_teammate_s_edit_while_one_client_holds_every_slot(
    tmp_path: Path,
) -> None:
    starts = tmp_path / "starts.log"
    options = {"slow_s": 60, "start_log": str(starts)}
    editor = service_process("editor_service", tmp_path, options=options, QUEUE_CAPACITY="2")
    with editor.running():

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=editor.url, timeout=120) as http:

                async def info() -> EditorInfo:
                    return EditorInfo.model_validate((await http.get("/v1/info")).json())

                async def busy() -> bool:
                    return (await info()).workers[0].state == "busy"

                running = asyncio.create_task(http.post("/v1/edits", json=edit("slow"), headers=A))
                await until(busy, "A's first edit started")
                # One after the other, so that a1 is queued ahead of a2 (sent at once, the two
                # requests could arrive in either order).
                queued: list[asyncio.Task[httpx.Response]] = []
                for i in (1, 2):
                    queued.append(
                        asyncio.create_task(http.post("/v1/edits", json=edit(f"a{i}"), headers=A))
                    )

                    async def waiting(depth: int = i) -> bool:
                        return (await info()).queue_depth == depth

                    await until(waiting, f"A's edit a{i} queued")
                # A alone holds the worker and every queue slot: its next edit is refused.
                refused = await http.post("/v1/edits", json=edit("a3"), headers=A)
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["type"] == "queue_full"
                # B's single edit is admitted all the same (A is past its share while B waits).
                teammate = asyncio.create_task(http.post("/v1/edits", json=edit("b0"), headers=B))

                async def three_waiting() -> bool:
                    # B cannot be answered while A's first edit holds the worker: done = refused.
                    assert not teammate.done(), teammate.result().text
                    return (await info()).queue_depth == 3

                await until(three_waiting, "B's edit queued")
                # While B waits, A is held to its share: refused again.
                held = await http.post("/v1/edits", json=edit("a4"), headers=A)
                assert held.status_code == 429, held.text
                running.cancel()  # A's first edit ends (its client went away)
                answers = await asyncio.gather(teammate, *queued)
                assert [r.status_code for r in answers] == [200, 200, 200]

        asyncio.run(scenario())
    # B's edit started next: before A's edits queued ahead of it.
    assert starts.read_text().split() == ["b0", "a1", "a2"]


def test_judge_admits_and_batches_a_teammate_s_item_while_one_client_holds_every_slot(
    tmp_path: Path,
) -> None:
    gate, journal = tmp_path / "open", tmp_path / "journal"
    options = {"batch_gate": str(gate), "journal": str(journal)}
    reward = service_process(
        "reward_service", tmp_path, options=options, QUEUE_CAPACITY="1", MAX_BATCH_IMAGES="2"
    )
    with reward.running():

        async def scenario() -> list[int]:
            async with httpx.AsyncClient(base_url=reward.url, timeout=120) as http:

                async def depth() -> int:
                    info = RewardInfo.model_validate((await http.get("/v1/info")).json())
                    return info.queue_depth

                # A fills the judge: one batch on the model, one beside it on the replica, one
                # taken ahead, and one item waiting in the queue (a request refused because the
                # one before it still held its slot is sent again).
                held: list[asyncio.Task[httpx.Response]] = []
                number = 0
                deadline = time.monotonic() + 30
                while not (len(held) == 4 and await depth() == 1):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the judge never held four of A's requests")
                    for task in [t for t in held if t.done()]:
                        assert task.result().status_code == 429, task.result().text
                        held.remove(task)
                    if len(held) < 4:
                        body = score(f"a{number} score=7")
                        held.append(
                            asyncio.create_task(http.post("/v1/scores", json=body, headers=A))
                        )
                        number += 1
                    await asyncio.sleep(0.2)  # pacing only
                refused = await http.post("/v1/scores", json=score("a-more score=7"), headers=A)
                assert refused.status_code == 429, refused.text
                teammate = asyncio.create_task(
                    http.post("/v1/scores", json=score("b0 score=7"), headers=B)
                )

                async def two_waiting() -> bool:
                    # B cannot be answered while the judge is held: done = refused.
                    assert not teammate.done(), teammate.result().text
                    return await depth() == 2

                await until(two_waiting, "B's item queued")
                held_to_share = await http.post(
                    "/v1/scores", json=score("a-more score=7"), headers=A
                )
                assert held_to_share.status_code == 429, held_to_share.text
                gate.touch()
                return [(await t).status_code for t in [teammate, *held]]

        assert asyncio.run(scenario()) == [200] * 5
    batches = [e["texts"] for e in read_journal(journal) if e["event"] == "batch"]
    owners = ["b" if any("b0 score" in text for text in texts) else "a" for texts in batches]
    # Three of A's batches were out when B came; B's went next, before A's waiting item.
    assert owners == ["a", "a", "a", "b", "a"], batches
