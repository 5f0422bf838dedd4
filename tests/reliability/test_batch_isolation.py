"""A judge batch never fails an innocent item: real service, the fault judge at the seam.

Two clients' items share one batch (the batch waits until it is full: all of them); one client's
item makes the model fail. The other client's items are scored (200), and only the culprit's
request fails, with an error that says whether a retry can help: an error the item causes (500,
retryable false) or out of memory even on its own (507, retryable true).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.reliability.services import EDITED, SOURCE, error_type, service_process
from tests.support.fake_judges import read_journal

pytestmark = pytest.mark.anyio


def body(*instructions: str) -> dict[str, object]:
    items = [
        {"source_image": SOURCE, "edited_image": EDITED, "instruction": text}
        for text in instructions
    ]
    return {"items": items, "protocol": "single"}


@pytest.mark.parametrize(
    ("culprit", "status", "kind", "retryable"),
    [
        ("fake-crash", 500, "backend_error", False),
        ("torch-oom", 507, "out_of_memory", True),
        ("fake-short", 500, "backend_error", False),
    ],
)
async def test_one_clients_bad_item_fails_only_its_request_and_the_batch_mates_are_scored(
    tmp_path: Path, culprit: str, status: int, kind: str, retryable: bool
) -> None:
    journal = tmp_path / "journal"
    # The four items (two images each: 8) fill a batch, which leaves as soon as the last one
    # comes; 10 s is only a bound. (A batch that waited 1 s needed the three requests to reach
    # the queue within 1 s of each other, which a loaded machine does not promise.)
    service = service_process(
        "reward_service",
        tmp_path,
        options={"journal": str(journal)},
        MAX_WAIT_S="10",  # the most it takes
        MAX_BATCH_IMAGES="8",
    )
    with service.running(ready_timeout_s=120):
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
            innocent = http.post("/v1/scores", json=body("score=3", "score=8"))
            guilty = http.post("/v1/scores", json=body(culprit))
            other = http.post("/v1/scores", json=body("score=6"))
            scored, failed, also = await asyncio.gather(innocent, guilty, other)

    batches = [e["size"] for e in read_journal(journal) if e["event"] == "batch"]
    assert batches[0] == 4  # all four items were in one batch, which failed and was split
    assert scored.status_code == 200, scored.text
    assert [round(r["overall"]) for r in scored.json()["results"]] == [3, 8]
    assert also.status_code == 200 and round(also.json()["results"][0]["overall"]) == 6
    assert failed.status_code == status
    assert error_type(failed) == kind
    assert failed.json()["error"]["retryable"] is retryable
    assert "Traceback" not in failed.text
