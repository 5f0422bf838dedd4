"""Expected-mode scores from recorded answer shapes of the OpenAI API and of vLLM (fixtures in
data/openai_answers): each expected score is computed here from the fixture's own numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from reward_service.backends.openai_logprobs import positions_of, read_score_tokens
from reward_service.scoring import expected_score
from shared_schemas import ScoreScale

ANSWERS = Path(__file__).parent / "data" / "openai_answers"


def answer(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ANSWERS / f"{name}.json").read_text())
    return loaded


def mean_and_mass(probabilities: dict[int, float]) -> tuple[float, float, list[float]]:
    mass = sum(probabilities.values())
    distribution = [probabilities.get(k, 0.0) / mass for k in range(11)]
    return sum(k * p for k, p in enumerate(distribution)), mass, distribution


def read(name: str) -> tuple[float, float, list[float], float]:
    positions = positions_of(answer(name))
    assert positions is not None
    reading = read_score_tokens(positions)
    expected = expected_score(reading.tokens.first, reading.tokens.after_one)
    assert expected is not None
    return expected.score, expected.score_mass, list(expected.distribution), reading.unresolved


def test_openai_whole_number_tokens_are_read_as_their_scores_and_spellings_add_up() -> None:
    e = math.exp
    # "10" is one token here, so the listed "1" is the score 1; " 8" is 8 as well.
    truth = {8: e(-0.3133) + e(-10.2), 7: e(-1.6), 9: e(-3.1), 10: e(-6.2), 6: e(-7.0)}
    truth[1] = e(-9.5)
    score, mass, distribution, unresolved = read("openai_whole_tokens")
    want_score, want_mass, want_distribution = mean_and_mass(truth)
    assert score == pytest.approx(want_score, abs=1e-9)
    assert mass == pytest.approx(want_mass, abs=1e-9)
    assert distribution == pytest.approx(want_distribution, abs=1e-9)
    assert unresolved == 0.0
    # Omitted digits (0, 2..5) have no probability; the mass says what was left out.
    assert distribution[0] == distribution[3] == 0.0
    assert mass < 1.0


def test_vllm_qwen_ten_is_read_as_one_then_zero_and_eleven_is_off_the_scale() -> None:
    e = math.exp
    one = e(-0.2)
    truth = {
        10: one * e(-0.05),
        1: one * (e(-3.2) + e(-7.5)),  # "1" then a non-digit: the answer was 1
        9: e(-1.9),
        8: e(-3.5),
        7: e(-6.0),
    }  # "1" then "1" (11) is dropped; -9999.0 is probability zero
    score, mass, distribution, unresolved = read("vllm_qwen_ten")
    want_score, want_mass, want_distribution = mean_and_mass(truth)
    assert score == pytest.approx(want_score, abs=1e-9)
    assert mass == pytest.approx(want_mass, abs=1e-9)
    assert distribution == pytest.approx(want_distribution, abs=1e-9)
    assert unresolved == 0.0
    assert distribution[10] > 0.5


def test_top_logprobs_that_omit_digits_give_them_no_probability_and_report_the_mass() -> None:
    e = math.exp
    truth = {7: e(-0.4), 6: e(-1.6), 8: e(-2.3), 5: e(-4.8)}
    score, mass, distribution, unresolved = read("vllm_qwen_omits_digits")
    want_score, want_mass, want_distribution = mean_and_mass(truth)
    assert score == pytest.approx(want_score, abs=1e-9)
    assert mass == pytest.approx(want_mass, abs=1e-9)
    assert distribution == pytest.approx(want_distribution, abs=1e-9)
    assert [k for k, p in enumerate(distribution) if p > 0] == [5, 6, 7, 8]
    assert unresolved == 0.0


def test_a_listed_one_that_cannot_be_told_from_ten_is_left_out_and_reported() -> None:
    e = math.exp
    truth = {3: e(-0.7), 2: e(-1.2), 4: e(-2.6)}
    score, mass, distribution, unresolved = read("vllm_qwen_one_unresolved")
    want_score, want_mass, _ = mean_and_mass(truth)
    assert score == pytest.approx(want_score, abs=1e-9)
    assert mass == pytest.approx(want_mass, abs=1e-9)
    assert distribution[1] == distribution[10] == 0.0
    assert unresolved == pytest.approx(e(-2.0))


def test_an_answer_without_logprobs_has_no_positions() -> None:
    assert positions_of(answer("transformers_serve_no_logprobs")) is None
    assert positions_of({"choices": []}) is None
    assert positions_of({}) is None


def read_scaled(name: str, low: int, high: int) -> tuple[float, float, list[float], float]:
    positions = positions_of(answer(name))
    assert positions is not None
    reading = read_score_tokens(positions, (low, high))
    tokens = reading.tokens
    scale = ScoreScale(min=low, max=high)
    expected = expected_score(tokens.first, tokens.after_one, scale, tokens.after)
    assert expected is not None
    return expected.score, expected.score_mass, list(expected.distribution), reading.unresolved


def test_a_zero_to_twenty_five_scale_reads_two_digit_numbers_after_the_generated_lead() -> None:
    e = math.exp
    two = e(-0.4)
    truth = {
        25: two * e(-0.3),
        20: two * e(-1.8),
        22: two * e(-6.0),
        2: two * e(-2.9),  # "2" then the end
        9: e(-2.5),
        7: e(-4.0),
    }  # "2" then "9" (29) is off the scale; "1" could be 1 or 10..19: left out, reported
    score, mass, distribution, unresolved = read_scaled("vllm_qwen_twenty_five", 0, 25)
    want = sum(truth.values())
    assert len(distribution) == 26
    assert distribution == pytest.approx([truth.get(n, 0.0) / want for n in range(26)], abs=1e-9)
    assert score == pytest.approx(sum(n * p for n, p in truth.items()) / want, abs=1e-9)
    assert mass == pytest.approx(want, abs=1e-9)
    assert unresolved == pytest.approx(e(-1.5))


def test_a_one_to_five_scale_reads_whole_tokens_and_drops_numbers_off_the_scale() -> None:
    e = math.exp
    truth = {4: e(-0.35) + e(-5.0), 3: e(-1.6), 5: e(-3.5)}
    score, mass, distribution, unresolved = read_scaled("openai_one_to_five", 1, 5)
    want = sum(truth.values())
    assert distribution == pytest.approx([truth.get(n, 0.0) / want for n in range(1, 6)])
    assert score == pytest.approx(sum(n * p for n, p in truth.items()) / want, abs=1e-9)
    assert mass == pytest.approx(want, abs=1e-9)
    assert unresolved == 0.0
