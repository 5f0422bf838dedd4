"""Reading a 0..10 score out of a judge's free-text answer (generate mode).

Rules, most explicit first; the first rule that finds anything decides, and within a rule the
last occurrence wins (the prompt asks for the score on the final line):

1. a JSON object with a "score" key: ``{"score": 7}``, ``{"reasoning": "...", "score": "7"}``;
2. a labelled score: ``Score: 7``, ``**Final score:** 7``, ``rating = 7``, ``score is seven``;
3. a fraction of ten: ``7/10``, ``7 out of 10``;
4. a lone number on the last line: ``7``, ``7.``

A rule that finds a score that is off the scale (``Score: 12``, ``4/5``, several scores in one
JSON list) reports the problem instead of falling through to a weaker rule. An answer with no
score is unscored, with the reason: never a guess, a zero or the middle of the scale.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SCORE_MIN = 0.0
SCORE_MAX = 10.0

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LABELLED = re.compile(
    r"\b(?:score|rating)\b[\"'*_\s]*(?::|=|\bis\b)[\s*_\"']*"
    rf"(?P<num>{_NUMBER}|{'|'.join(_WORDS)})\b"
    r"(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_FRACTION = re.compile(rf"(?P<num>{_NUMBER})\s*(?:/|out\s+of)\s*10(?![\d.]*\d)", re.IGNORECASE)
_LONE = re.compile(rf"(?P<num>{_NUMBER})\.?")


@dataclass(frozen=True, slots=True)
class ParsedScore:
    score: float | None
    rule: str | None  # json | labelled | fraction | lone_number; None when nothing was found
    error: str | None = None  # why there is no score


def parse_score(text: str) -> ParsedScore:
    """The score in ``text`` (see the module docstring), or the reason there is none."""
    body = _THINK.sub(" ", text).strip()
    if not body:
        return ParsedScore(None, None, "the answer is empty")
    for rule in (_from_json, _from_label, _from_fraction, _from_last_line):
        found = rule(body)
        if found is not None:
            return found
    return ParsedScore(None, None, "no score found in the answer")


def _checked(value: float, rule: str, shown: str) -> ParsedScore:
    if not SCORE_MIN <= value <= SCORE_MAX:
        return ParsedScore(None, rule, f"the score {shown} is outside 0..10")
    return ParsedScore(value, rule)


def _number(token: str) -> float:
    word = _WORDS.get(token.lower())
    return float(word) if word is not None else float(token)


def _from_json(body: str) -> ParsedScore | None:
    decoder = json.JSONDecoder()
    found: ParsedScore | None = None
    for match in re.finditer(r"\{", body):
        try:
            obj, _ = decoder.raw_decode(body, match.start())
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if isinstance(key, str) and key.strip().lower() == "score":
                found = _json_value(value)
    return found


def _json_value(value: object) -> ParsedScore:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        return ParsedScore(None, "json", f"the answer gives several scores: {value}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return ParsedScore(None, "json", f"the JSON score is not a number: {value!r}")
    try:
        number = _number(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        return ParsedScore(None, "json", f"the JSON score is not a number: {value!r}")
    return _checked(number, "json", str(value))


def _from_label(body: str) -> ParsedScore | None:
    matches = list(_LABELLED.finditer(body))
    if not matches:
        return None
    last = matches[-1]
    shown = last.group(0).split(":")[-1].strip(" *_\"'")
    denominator = last.group("den")
    if denominator is not None and float(denominator) != SCORE_MAX:
        return ParsedScore(None, "labelled", f"the score {shown} is not on the 0..10 scale")
    return _checked(_number(last.group("num")), "labelled", last.group("num"))


def _from_fraction(body: str) -> ParsedScore | None:
    matches = list(_FRACTION.finditer(body))
    if not matches:
        return None
    number = matches[-1].group("num")
    return _checked(float(number), "fraction", f"{number}/10")


def _from_last_line(body: str) -> ParsedScore | None:
    last_line = body.splitlines()[-1].strip().strip("*_#>` ")
    match = _LONE.fullmatch(last_line)
    if match is None:
        return None
    number = match.group("num")
    return _checked(float(number), "lone_number", number)
