"""From a request to judge questions and back: layout, shared images, readings, timings."""

from __future__ import annotations

import math

import pytest

from reward_service.backends.base import GeneratedText, ScoreTokenLogprobs
from reward_service.protocols import ProtocolRegistry
from reward_service.scorer import (
    assemble,
    build_items,
    decode_items,
    item_cost,
    read_output,
)
from service_kit.replicas.admission import BatchRun, Completed
from shared_schemas import ScoreItem, ScoreRequest
from tests.support.fake_judges import peaked_logprobs
from tests.support.images import image_bytes

VIESCORE = ProtocolRegistry.load().get("viescore")


def request(count: int, mode: str = "expected") -> ScoreRequest:
    items = [
        ScoreItem(
            id=f"i{n}",
            source_image=image_bytes(16, 16, seed=n),
            edited_image=image_bytes(16, 16, seed=n + 10),
            instruction=f"edit {n}",
        )
        for n in range(count)
    ]
    return ScoreRequest.model_validate({"items": items, "mode": mode})


def test_questions_go_item_by_item_in_protocol_order_and_share_each_items_images() -> None:
    body = request(2)
    images = decode_items(body.items, max_pixels=10_000)
    items = build_items(VIESCORE, body, images, "req-1")
    assert [q.key for q in items[0].questions] == [
        "req-1/0/editing_success",
        "req-1/0/over_editing",
        "req-1/0/naturalness",
        "req-1/0/artifacts",
    ]
    assert len(items) == 2 and items[1].questions[0].key == "req-1/1/editing_success"
    first_item = items[0]
    # Each image once, decoded to pixels; questions name them by index (source 0, edited 1).
    assert first_item.images == (images[0].source, images[0].edited)
    assert first_item.images[0].width == 16 and len(first_item.images[1].pixels) == 16 * 16 * 3
    assert [q.image_indices for q in first_item.questions] == [(0, 1), (0, 1), (1,), (1,)]
    # The item puts 3 images through the model: (source, edited) once, and edited once more.
    assert item_cost(first_item) == 3 == VIESCORE.spec.images_per_item
    assert all("edit 0" in str(q.content[-1]) for q in first_item.questions[:2])


def test_items_are_assembled_from_their_own_answers_with_batch_timings() -> None:
    body = request(2)
    batch_a = BatchRun(number=1, size=1, started=0.0, duration_s=0.5)
    batch_b = BatchRun(number=2, size=3, started=0.5, duration_s=0.25)
    answers = [
        Completed(tuple(peaked_logprobs(t) for t in (8, 6, 9, 4)), batch_a, 0.1),
        Completed(tuple(peaked_logprobs(10) for _ in range(4)), batch_b, 0.6),
    ]
    first, second = assemble(VIESCORE, body, answers, accepted_at=0.0)
    assert first.id == "i0" and first.protocol_hash == VIESCORE.hash
    assert first.sc is not None and first.pq is not None and first.overall is not None
    assert round(first.sc) == 6 and round(first.pq) == 4
    assert first.metrics == {"sc": first.sc, "pq": first.pq, "overall": first.overall}
    assert first.overall == pytest.approx(math.sqrt(first.sc * first.pq))
    assert first.timings.inference_s == pytest.approx(0.5)
    assert second.timings.inference_s == pytest.approx(0.25)
    assert second.timings.queue_wait_s == pytest.approx(0.6)
    # How many items shared each batch: what an item's share of the device time is made of.
    assert (first.timings.batch_items, second.timings.batch_items) == (1, 3)
    assert second.sc is not None and second.sc > 9


def test_a_generated_answer_is_parsed_and_kept() -> None:
    scored = read_output("q", GeneratedText("Fine.\nScore: 7", 5))
    unscored = read_output("q", GeneratedText("I cannot tell.", 4))
    assert (scored.score, scored.raw_text, scored.error) == (7.0, "Fine.\nScore: 7", None)
    assert unscored.score is None and unscored.raw_text == "I cannot tell."
    assert unscored.error == "no score found in the answer"


def test_read_output_says_why_an_expected_answer_has_no_score() -> None:
    nothing = read_output("q", ScoreTokenLogprobs((-math.inf,) * 10, (-math.inf,) * 10))
    broken = read_output("q", ScoreTokenLogprobs((math.nan,) * 10, (0.0,) * 10))
    assert nothing.score is None and nothing.error == "the judge gave no probability to any score"
    assert broken.score is None and broken.error == "the model's probabilities are NaN"
