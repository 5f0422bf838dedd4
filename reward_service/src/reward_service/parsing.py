"""Reading scores out of a judge's free-text answer (generate mode), on the protocol's scale.

One score (``parse: {format: score}``, the default), rules most explicit first; the first rule
that finds anything decides, and within a rule the last occurrence wins (the prompt asks for the
score on the final line):

1. a JSON object with a "score" key: ``{"score": 7}``, ``{"reasoning": "...", "score": "7"}``;
2. a labelled score: ``Score: 7``, ``**Final score:** 7``, ``rating = 7``, ``score is seven``;
3. a fraction of the scale's maximum: ``7/10``, ``7 out of 10`` (``4/5`` on a 1..5 scale);
4. a lone number on the last line: ``7``, ``7.``

A rule that finds a score that is off the scale (``Score: 12``, ``4/5`` on 0..10, several scores
in one JSON list) reports the problem instead of falling through to a weaker rule.

Several scores in one answer (``parse_scores``): ``format: json`` reads the last JSON object
holding the declared key (lenient as GEdit-Bench's reader is: newlines inside strings, and its
``fix_json`` repair of keys and values without quotes), whose value is a list in the order of
the question's scores or an object keyed by their names; failing an object, a bare list of
numbers (``[6, 0]``), or a bare number (unscored unless one score was asked). ``format: regex``
takes the last match of the pattern, one named group per score.

Whatever the rule, an answer with no score, the wrong number of scores, or a score off the scale
is unscored, with the reason: never a guess, a zero or the middle of the scale.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared_schemas import DEFAULT_SCALE, ScoreScale

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
_FRACTION = re.compile(
    rf"(?P<num>{_NUMBER})\s*(?:/|out\s+of)\s*(?P<den>\d+)(?![\d.]*\d)", re.IGNORECASE
)
_LONE = re.compile(rf"(?P<num>{_NUMBER})\.?")


@dataclass(frozen=True, slots=True)
class ParsedScore:
    score: float | None
    rule: str | None  # json | labelled | fraction | lone_number; None when nothing was found
    error: str | None = None  # why there is no score


def parse_score(text: str, scale: ScoreScale = DEFAULT_SCALE) -> ParsedScore:
    """The score in ``text`` (see the module docstring), or the reason there is none."""
    body = _THINK.sub(" ", text).strip()
    if not body:
        return ParsedScore(None, None, "the answer is empty")
    found = _from_json(body, scale)
    if found is None:
        found = _from_label(body, scale)
    if found is None:
        found = _from_fraction(body, scale)
    if found is None:
        found = _from_last_line(body, scale)
    return found or ParsedScore(None, None, "no score found in the answer")


def _checked(value: float, rule: str, shown: str, scale: ScoreScale) -> ParsedScore:
    if not (math.isfinite(value) and scale.contains(value)):
        return ParsedScore(None, rule, f"the score {shown} is outside {scale.min}..{scale.max}")
    return ParsedScore(value, rule)


def _number(token: str) -> float:
    word = _WORDS.get(token.lower())
    return float(word) if word is not None else float(token)


def _from_json(body: str, scale: ScoreScale) -> ParsedScore | None:
    found: ParsedScore | None = None
    for obj in _json_objects(body):
        for key, value in obj.items():
            if isinstance(key, str) and key.strip().lower() == "score":
                found = _json_value(value, scale)
    return found


def _json_value(value: object, scale: ScoreScale) -> ParsedScore:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        return ParsedScore(None, "json", f"the answer gives several scores: {value}")
    number = _json_number(value)
    if number is None:
        return ParsedScore(None, "json", f"the JSON score is not a number: {value!r}")
    return _checked(number, "json", str(value), scale)


def _json_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return _number(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        return None


def _json_objects(body: str) -> list[dict[object, object]]:
    """Every JSON object in ``body``, in order (control characters allowed inside strings)."""
    decoder = json.JSONDecoder(strict=False)
    objects = []
    for match in re.finditer(r"\{", body):
        try:
            obj, _ = decoder.raw_decode(body, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            objects.append(obj)
    return objects


def _from_label(body: str, scale: ScoreScale) -> ParsedScore | None:
    matches = list(_LABELLED.finditer(body))
    if not matches:
        return None
    last = matches[-1]
    shown = last.group(0).split(":")[-1].strip(" *_\"'")
    denominator = last.group("den")
    if denominator is not None and float(denominator) != scale.max:
        return ParsedScore(
            None, "labelled", f"the score {shown} is not on the {scale.min}..{scale.max} scale"
        )
    return _checked(_number(last.group("num")), "labelled", last.group("num"), scale)


def _from_fraction(body: str, scale: ScoreScale) -> ParsedScore | None:
    matches = [m for m in _FRACTION.finditer(body) if int(m.group("den")) == scale.max]
    if not matches:
        return None
    number = matches[-1].group("num")
    return _checked(float(number), "fraction", f"{number}/{scale.max}", scale)


def _from_last_line(body: str, scale: ScoreScale) -> ParsedScore | None:
    last_line = body.splitlines()[-1].strip().strip("*_#>` ")
    match = _LONE.fullmatch(last_line)
    if match is None:
        return None
    number = match.group("num")
    return _checked(float(number), "lone_number", number, scale)


@dataclass(frozen=True, slots=True)
class ParsedScores:
    """Several named scores from one answer: all of them, or none and the reason."""

    scores: dict[str, float | None] = field(default_factory=dict)
    rule: str | None = None
    error: str | None = None


_UNQUOTED_KEY = re.compile(r"(\w+):")
_KEY_VALUE = re.compile(r'(".*?"):(.*?)(,|})')


def parse_scores(
    text: str,
    names: Sequence[str],
    *,
    format: str = "json",
    key: str = "score",
    pattern: str | None = None,
    scale: ScoreScale = DEFAULT_SCALE,
) -> ParsedScores:
    """The named scores in ``text`` by the question's parse rule (module docstring)."""
    unscored = dict.fromkeys(names)
    body = _THINK.sub(" ", text).strip()
    if not body:
        return ParsedScores(unscored, None, "the answer is empty")
    if format == "score":
        one = parse_score(body, scale)
        return ParsedScores({names[0]: one.score}, one.rule, one.error)
    if format == "regex":
        matches = list(re.finditer(pattern or "", body))
        if not matches:
            return ParsedScores(unscored, "regex", "the answer does not match the pattern")
        found = matches[-1].groupdict()
        return _named(dict(zip(names, (found.get(n) for n in names), strict=True)), "regex", scale)
    return _from_json_answer(body, names, key, scale)


def _from_json_answer(body: str, names: Sequence[str], key: str, scale: ScoreScale) -> ParsedScores:
    objects = _json_objects(body) or _lenient_objects(body)
    holding = [o for o in objects if any(_same_key(k, key) for k in o)]
    if holding:
        value = next(v for k, v in holding[-1].items() if _same_key(k, key))
        return _json_scores(value, names, scale)
    if objects:
        return ParsedScores(dict.fromkeys(names), "json", f"no {key!r} in the answer's JSON")
    start, end = body.find("["), body.rfind("]")
    if 0 <= start < end:
        try:
            listed = json.loads(body[start : end + 1])
        except ValueError:
            listed = None
        if isinstance(listed, list):
            return _json_scores(listed, names, scale)
    if _LONE.fullmatch(body):
        return _json_scores(body.rstrip("."), names, scale)
    return ParsedScores(dict.fromkeys(names), None, "no JSON with scores found in the answer")


def _same_key(found: object, key: str) -> bool:
    return isinstance(found, str) and found.strip().lower() == key.lower()


def _lenient_objects(body: str) -> list[dict[object, object]]:
    """GEdit-Bench's repair (GEdit-Bench/viescore/utils.py ``fix_json``, stepfun-ai/Step1X-Edit
    @570eba6): the span from the first "{" to the last "}", newlines removed, keys quoted,
    bare numbers made one-item lists and other bare values quoted."""
    start, end = body.find("{"), body.rfind("}")
    if not 0 <= start < end:
        return []
    fixed = _UNQUOTED_KEY.sub(r'"\1":', body[start : end + 1].replace("\n", ""))
    fixed = _KEY_VALUE.sub(_quoted_value, fixed)
    try:
        obj = json.loads(fixed)
    except ValueError:
        return []
    return [obj] if isinstance(obj, dict) else []


def _quoted_value(match: re.Match[str]) -> str:
    key, value, comma = match.groups()
    value = value.strip()
    if re.match(r"^-?\d+(\.\d+)?$", value):
        value = f"[{value}]"
    elif not re.match(r"^(true|false|null)$", value, re.IGNORECASE):
        value = f'"{value}"'
    return f"{key}: {value}{comma}"


def _json_scores(value: object, names: Sequence[str], scale: ScoreScale) -> ParsedScores:
    if isinstance(value, dict):
        missing = [n for n in names if n not in value]
        if missing:
            return ParsedScores(dict.fromkeys(names), "json", f"the answer has no {missing}")
        return _named({n: value[n] for n in names}, "json", scale)
    values = value if isinstance(value, list) else [value]
    if len(values) != len(names):
        return ParsedScores(
            dict.fromkeys(names),
            "json",
            f"the answer gives {len(values)} score(s) where {len(names)} were asked: {value!r}",
        )
    return _named(dict(zip(names, values, strict=True)), "json", scale)


def _named(values: dict[str, object], rule: str, scale: ScoreScale) -> ParsedScores:
    scores: dict[str, float | None] = {}
    for name, value in values.items():
        number = _json_number(value)
        if number is None:
            return ParsedScores(dict.fromkeys(values), rule, f"{name}: not a number: {value!r}")
        checked = _checked(number, rule, f"{name} = {value}", scale)
        if checked.score is None:
            return ParsedScores(dict.fromkeys(values), rule, checked.error)
        scores[name] = checked.score
    return ParsedScores(scores, rule)
