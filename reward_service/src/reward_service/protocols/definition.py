"""What a judge protocol is (a validated YAML document) and how it renders into questions.

A protocol declares its integer ``scale``, its questions (each with the images it shows, its
prompt, the named scores its one answer carries and how they are read from the answer), its
``metrics`` (reward_service.protocols.metrics) and the ``headline`` metric, plus the system
prompt, per-category overrides and the sentence that asks for the answer in each mode.

Templates may use ``{instruction}``, ``{category}`` and ``{hints}``; any other ``{name}`` is
refused when the file is loaded (so a typo cannot silently reach the judge), while other braces,
such as a JSON example, are left alone. With ``render: tidy`` (the default) a line holding only
a variable that is empty (no hints, say) is dropped, runs of blank lines collapse to one and the
result is stripped, so an absent hint leaves no gap; ``render: verbatim`` sends the text exactly
as written, variables substituted (for prompts that must match another project's byte for byte).

A question's user turn is, with ``layout: images_first`` (the default): for each of its images,
the image's label (if any) and the image; then the rendered prompt, a blank line, and the mode's
answer instruction (if the protocol gives one). With ``layout: text_first`` the text comes first.
A question names its images by role, in the order shown (shared_schemas.scores.ImageRole: the
item's ``source``, its ``edited`` image, its further inputs ``input_2``..``input_6``, shown where
the item has them, and a ``reference`` image); its ``labels`` override the protocol's
``image_labels`` for it, and its ``variants`` say how it is asked of items whose ``variant``
(named by the benchmark's loader) they list: other images, prompt or labels.

Reading answers. A question that answers one score (``answers`` left out: the score takes the
question's name) is read in expected mode as a distribution over the scale, and in generate mode
by ``parse`` (default ``format: score``: a labelled score, a fraction, a JSON ``score`` or a lone
number; reward_service.parsing). A question whose answer carries several scores names them in
``answers`` and declares ``parse``: ``format: json`` (``key`` holds a list, in the order of
``answers``, or an object keyed by their names) or ``format: regex`` (a ``pattern`` with one named
group per score). Expected mode cannot read one distribution per score from such an answer, so
the protocol is then generate-only (ProtocolInfo.modes says so), as it is when it gives no
expected-mode answer instruction or its scale goes beyond 99 (0..100, say).

Questions per category. By default every question is asked of every item. A protocol whose
categories are judged with different questions declares ``question_sets``: each names the
questions it asks and the ``categories`` it applies to; exactly one set leaves ``categories`` out
and applies to every other category (and to items without one). Two questions may answer the
same score name when no set asks both (KRIS-Bench's instruction score comes from a one-score call
on most tasks and from the instruction+knowledge call on its knowledge tasks). A score an item's
set does not ask is absent for that item, and so is every metric that reads nothing it has
(reward_service.protocols.metrics): absent, never zero and never a guess. A question may declare
its own ``scale`` (RISEBench's logical puzzles answer 0/1 inside a 0-5 protocol); it must lie
within the protocol's, which bounds every score and metric.

Files written before metrics existed (``combine: single`` or ``combine: viescore`` with question
``group``s) still load: they are read as the equivalent ``metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reward_service.protocols.metrics import MetricSpec, check_metrics, present_metrics
from shared_schemas import DEFAULT_SCALE, ScoreMode, ScoreScale
from shared_schemas.scores import EXPECTED_SCALE_LIMIT, IMAGE_ROLES, ImageRole

Mode = Literal["expected", "generate"]

TEMPLATE_VARIABLES = frozenset({"instruction", "category", "hints"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_NAME = r"^[a-z][a-z0-9_-]{0,63}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(text: str, allowed: frozenset[str] = TEMPLATE_VARIABLES) -> str:
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - allowed)
    if unknown:
        names = ", ".join("{" + n + "}" for n in unknown)
        known = ", ".join("{" + n + "}" for n in sorted(allowed))
        raise ValueError(f"unknown template variable {names}; use {known}")
    return text


class ParseSpec(_Spec):
    """How generate mode reads a question's scores from its answer."""

    format: Literal["score", "json", "regex"] = "score"
    key: str = Field(default="score", min_length=1, description="json: the key holding scores.")
    pattern: str | None = Field(
        default=None, description="regex: one named group per score; the last match counts."
    )

    @model_validator(mode="after")
    def _pattern(self) -> Self:
        if (self.format == "regex") != (self.pattern is not None):
            raise ValueError("parse: a pattern is given with format: regex, and only then")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"parse: the pattern is not a valid regex: {exc}") from None
        return self


def _distinct_roles(images: list[ImageRole]) -> list[ImageRole]:
    if len(set(images)) != len(images):
        raise ValueError("an image may be shown once per question")
    return images


class QuestionVariant(_Spec):
    """A question as asked of some items: other images, prompt or labels (``variants``, chosen
    by the item's ``variant`` as its benchmark's loader names it: KRIS-Bench's temporal frames
    in their order, RISEBench's items judged against their reference image)."""

    images: list[ImageRole] = Field(min_length=1, max_length=len(IMAGE_ROLES))
    prompt: str | None = Field(default=None, min_length=1, description="None: the question's.")
    labels: dict[ImageRole, str] | None = Field(default=None, description="None: the question's.")

    @field_validator("prompt")
    @classmethod
    def _prompt_variables(cls, prompt: str | None) -> str | None:
        return None if prompt is None else _check_template(prompt)

    @field_validator("images")
    @classmethod
    def _distinct(cls, images: list[ImageRole]) -> list[ImageRole]:
        return _distinct_roles(images)


class QuestionSpec(_Spec):
    name: str = Field(pattern=_NAME)
    images: list[ImageRole] = Field(
        min_length=1,
        max_length=len(IMAGE_ROLES),
        description="The images shown, in order: source, edited, reference, and the item's "
        "further inputs input_2..input_6 (each shown where the item has it).",
    )
    labels: dict[ImageRole, str] = Field(
        default_factory=dict,
        description="Text shown before an image in this question (beside the protocol's "
        "image_labels, which it overrides), as the official prompt labels it.",
    )
    variants: dict[str, QuestionVariant] = Field(
        default_factory=dict,
        max_length=16,
        description="How the question is asked of an item whose variant (ScoreItem.variant) "
        "is named here; any other item is asked the question as written.",
    )
    prompt: str = Field(min_length=1)
    answers: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="The named scores the answer carries, in order (default: [name]).",
    )
    parse: ParseSpec = Field(default_factory=ParseSpec)
    scale: ScoreScale | None = Field(
        default=None, description="This question's own scale, within the protocol's (default)."
    )

    @property
    def scores(self) -> list[str]:
        return self.answers if self.answers is not None else [self.name]

    @model_validator(mode="after")
    def _readable(self) -> Self:
        for answer in self.scores:
            if not re.match(_NAME, answer):
                raise ValueError(f"score name {answer!r} must match {_NAME}")
        if len(self.scores) > 1 and self.parse.format == "score":
            raise ValueError(
                f"question {self.name!r} answers several scores: declare parse "
                "(format: json with a key, or format: regex with a pattern)"
            )
        if self.parse.pattern is not None:
            groups = set(re.compile(self.parse.pattern).groupindex)
            missing = [a for a in self.scores if a not in groups]
            if missing:
                raise ValueError(f"question {self.name!r}: the pattern has no group {missing}")
        return self

    @field_validator("prompt")
    @classmethod
    def _prompt_variables(cls, prompt: str) -> str:
        return _check_template(prompt)

    @field_validator("images")
    @classmethod
    def _distinct(cls, images: list[ImageRole]) -> list[ImageRole]:
        return _distinct_roles(images)


class CategorySpec(_Spec):
    """Overrides for items of one category: the system prompt and/or some question prompts."""

    system: str | None = None
    prompts: dict[str, str] = Field(default_factory=dict)

    @field_validator("system")
    @classmethod
    def _system_variables(cls, system: str | None) -> str | None:
        return None if system is None else _check_template(system)

    @field_validator("prompts")
    @classmethod
    def _prompt_variables(cls, prompts: dict[str, str]) -> dict[str, str]:
        for prompt in prompts.values():
            _check_template(prompt)
        return prompts


class QuestionSetSpec(_Spec):
    """The questions asked of items in some categories (``categories`` left out: the default
    set, for every category no other set names)."""

    categories: list[str] | None = Field(default=None, min_length=1)
    questions: list[str] = Field(min_length=1, max_length=16)

    @field_validator("questions", "categories")
    @classmethod
    def _distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError(f"a name is listed twice: {names}")
        return names


class AnswerSpec(_Spec):
    """The last sentence of every question, per mode (None: nothing is appended; without an
    expected-mode sentence the protocol is generate-only)."""

    expected: str | None = Field(
        default=None,
        min_length=1,
        description="Must make the score's first digit the very next token, e.g. 'Answer with "
        "one integer from 0 to 10 and nothing else.'",
    )
    generate: str | None = Field(
        default=None, min_length=1, description="e.g. brief reasoning, then 'Score: N'."
    )


class ProtocolSpec(_Spec):
    name: str = Field(pattern=_NAME)
    description: str = Field(min_length=1)
    reference: str = Field(
        default="", description="Where the prompts and rules come from (file and commit)."
    )
    scale: ScoreScale = DEFAULT_SCALE
    render: Literal["tidy", "verbatim"] = "tidy"
    layout: Literal["images_first", "text_first"] = "images_first"
    system: str = ""
    image_labels: dict[ImageRole, str] = Field(default_factory=dict)
    hints_format: str = "Additional guidance for this item: {hints}"
    answer: AnswerSpec = Field(default_factory=AnswerSpec)
    questions: list[QuestionSpec] = Field(min_length=1, max_length=16)
    metrics: list[MetricSpec] = Field(min_length=1, max_length=32)
    headline: str = ""
    categories: dict[str, CategorySpec] = Field(default_factory=dict)
    question_sets: dict[str, QuestionSetSpec] = Field(
        default_factory=dict,
        description="Which questions are asked of which categories (empty: all, of every item).",
    )
    superseded_by: str | None = Field(
        default=None,
        pattern=_NAME,
        description="Kept loadable for runs that name it; new runs should use this protocol.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_combine(cls, data: Any) -> Any:
        """A file written before metrics (``combine`` and question ``group``s) as metrics."""
        if not isinstance(data, dict) or "combine" not in data:
            return data
        data = dict(data)
        rule = data.pop("combine")
        questions = [dict(q) if isinstance(q, dict) else q for q in data.get("questions") or []]
        groups: dict[str, list[str]] = {}
        for q in questions:
            if isinstance(q, dict):
                groups.setdefault(str(q.pop("group", None)), []).append(str(q.get("name")))
        data["questions"] = questions
        if "metrics" in data:
            raise ValueError("give metrics or the older combine, not both")
        if rule == "single":
            if len(questions) != 1:
                raise ValueError("combine: single needs exactly one question")
            name = next(iter(groups.values()))[0]
            data["metrics"] = [{"name": "overall", "label": "Overall", "score": name}]
        elif rule == "viescore":
            if set(groups) != {"sc", "pq"}:
                raise ValueError(
                    "combine: viescore needs questions in groups sc and pq, and no others"
                )
            data["metrics"] = viescore_metrics(groups["sc"], groups["pq"])
        else:
            raise ValueError(f"combine: {rule!r} is not known (single, viescore); use metrics")
        data.setdefault("headline", "overall")
        return data

    @field_validator("system")
    @classmethod
    def _system_variables(cls, system: str) -> str:
        return _check_template(system)

    @field_validator("hints_format")
    @classmethod
    def _hints_variables(cls, text: str) -> str:
        return _check_template(text, frozenset({"hints"}))

    @property
    def images_per_item(self) -> int:
        """Images one item puts through the model (the most over the question sets): questions
        showing the same images (after the same system prompt) share one prefill of them."""
        most = 1
        for questions in self._sets().values():
            shown = {tuple(q.images) for q in questions}
            most = max(most, sum(len(images) for images in shown))
        return most

    @property
    def score_names(self) -> list[str]:
        """Every named score the questions answer, in order, each once."""
        return list(dict.fromkeys(score for q in self.questions for score in q.scores))

    def question_scale(self, question: QuestionSpec) -> ScoreScale:
        return question.scale or self.scale

    def set_name(self, category: str | None) -> str | None:
        """The question set an item of ``category`` is judged with (None: no sets declared)."""
        if not self.question_sets:
            return None
        default = ""
        for name, spec in self.question_sets.items():
            if spec.categories is None:
                default = name
            elif category is not None and category in spec.categories:
                return name
        return default

    def questions_for(self, category: str | None) -> list[QuestionSpec]:
        """The questions asked of an item of ``category``, in the protocol's order."""
        name = self.set_name(category)
        return list(self.questions) if name is None else self._sets()[name]

    def metrics_of(self, questions: Sequence[QuestionSpec]) -> list[str]:
        """The metrics an item asked ``questions`` has (the others are absent for it)."""
        return present_metrics(self.metrics, [s for q in questions for s in q.scores])

    def question_set_lists(self) -> list[list[QuestionSpec]]:
        """Each declared question set's questions, in the order of ``question_sets``."""
        return list(self._sets().values()) if self.question_sets else []

    def _sets(self) -> dict[str, list[QuestionSpec]]:
        if not self.question_sets:
            return {"": list(self.questions)}
        by_name = {q.name: q for q in self.questions}
        return {
            name: [by_name[q] for q in by_name if q in spec.questions]
            for name, spec in self.question_sets.items()
        }

    @property
    def modes(self) -> list[ScoreMode]:
        """generate always; expected where every answer is one score, the protocol asks for it
        as a bare number, and the scale's numbers have at most two digits."""
        one_each = all(len(q.scores) == 1 for q in self.questions)
        narrow = self.scale.max <= EXPECTED_SCALE_LIMIT
        readable = one_each and narrow and self.answer.expected
        return ["expected", "generate"] if readable else ["generate"]

    @property
    def headline_metric(self) -> str:
        return self.headline or self.metrics[-1].name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [q.name for q in self.questions]
        if len(set(names)) != len(names):
            raise ValueError("question names must be unique")
        self._check_sets(names)
        for set_name, questions in self._sets().items():
            scores = [s for q in questions for s in q.scores]
            if len(set(scores)) != len(scores):
                where = f" in question set {set_name!r}" if set_name else ""
                raise ValueError(f"score names (the questions' answers) must be unique{where}")
        for question in self.questions:
            scale = self.question_scale(question)
            if not (self.scale.min <= scale.min and scale.max <= self.scale.max):
                raise ValueError(
                    f"question {question.name!r}: its scale {scale.min}..{scale.max} must lie "
                    f"within the protocol's {self.scale.min}..{self.scale.max}"
                )
        for category, spec in self.categories.items():
            unknown = sorted(set(spec.prompts) - set(names))
            if unknown:
                raise ValueError(f"category {category!r} overrides unknown questions {unknown}")
            asked = {q.name for q in self.questions_for(category)}
            unasked = sorted(set(spec.prompts) - asked)
            if unasked:
                raise ValueError(
                    f"category {category!r} overrides {unasked}, which its question set "
                    f"{self.set_name(category)!r} does not ask"
                )
        if self.superseded_by == self.name:
            raise ValueError("superseded_by names the protocol itself")
        if not self.headline and len(self.metrics) > 1:
            raise ValueError("with several metrics, name the headline one (headline: NAME)")
        check_metrics(self.metrics, self.score_names, self.headline_metric)
        for metric in self.metrics:
            if not any(metric.name in self.metrics_of(q) for q in self._sets().values()):
                raise ValueError(
                    f"metric {metric.name!r} reads scores that no question set asks together"
                )
        return self

    def _check_sets(self, names: list[str]) -> None:
        if not self.question_sets:
            return
        defaults = [n for n, s in self.question_sets.items() if s.categories is None]
        if len(defaults) != 1:
            raise ValueError(
                "question_sets: exactly one set leaves out categories (the questions for every "
                f"other category); found {len(defaults)}" + (f": {defaults}" if defaults else "")
            )
        owner: dict[str, str] = {}
        used: set[str] = set()
        for set_name, spec in self.question_sets.items():
            if not re.match(_NAME, set_name):
                raise ValueError(f"question set name {set_name!r} must match {_NAME}")
            unknown = [q for q in spec.questions if q not in names]
            if unknown:
                raise ValueError(f"question set {set_name!r} names unknown questions {unknown}")
            used.update(spec.questions)
            for category in spec.categories or []:
                if category in owner:
                    raise ValueError(
                        f"category {category!r} is in question sets {owner[category]!r} and "
                        f"{set_name!r}; a category is judged by one set"
                    )
                owner[category] = set_name
        unused = [n for n in names if n not in used]
        if unused:
            raise ValueError(f"questions {unused} are in no question set")


def viescore_metrics(sc: list[str], pq: list[str]) -> list[dict[str, Any]]:
    """GEdit-Bench's aggregation over the given sub-scores: SC = min, PQ = min, O = sqrt(SC*PQ)."""
    return [
        {"name": "sc", "label": "Semantic consistency", "min": sc},
        {"name": "pq", "label": "Perceptual quality", "min": pq},
        {"name": "overall", "label": "Overall", "geometric_mean": ["sc", "pq"]},
    ]


@dataclass(frozen=True, slots=True)
class ImageSlot:
    """Where one of the item's images goes in a question's user turn."""

    role: ImageRole


@dataclass(frozen=True, slots=True)
class RenderedQuestion:
    """One question for one item: the user turn holds text and image slots, in order."""

    name: str
    answers: tuple[str, ...]
    system: str
    parts: tuple[str | ImageSlot, ...]


def _fill(template: str, values: dict[str, str], verbatim: bool = False) -> str:
    if verbatim:
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    for name, value in values.items():
        if not value:  # a line holding only an empty variable goes away with it
            template = re.sub(rf"(?m)^[ \t]*\{{{name}\}}[ \t]*(?:\n|$)", "", template)
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    return _BLANK_RUNS.sub("\n\n", text).strip()


class MissingImage(ValueError):
    """A question shows an image the item does not carry (``role``)."""

    def __init__(self, message: str, role: ImageRole) -> None:
        super().__init__(message)
        self.role = role


def _shown(
    question: QuestionSpec, inputs: int, has_reference: bool, item_variant: str | None
) -> tuple[list[ImageRole], dict[ImageRole, str] | None, str | None]:
    """The images a question shows for an item with ``inputs`` input images (a reference or
    not, of a variant or none), its labels (None: the question's) and its prompt (None: the
    question's)."""
    variant = question.variants.get(item_variant) if item_variant is not None else None
    if variant is not None:
        images, labels, prompt = list(variant.images), variant.labels, variant.prompt
    else:
        images, labels, prompt = list(question.images), None, None
    if "reference" in images and not has_reference:
        raise MissingImage(
            f"question {question.name!r} shows a reference image and the item has none",
            role="reference",
        )
    # Further inputs the item has, in the question's order (an item with fewer shows fewer).
    kept = [r for r in images if not r.startswith("input_") or int(r[6:]) <= inputs]
    return kept, labels, prompt


def render(
    spec: ProtocolSpec,
    *,
    instruction: str,
    category: str | None,
    hints: str | None,
    mode: Mode,
    inputs: int = 1,
    has_reference: bool = False,
    variant: str | None = None,
) -> list[RenderedQuestion]:
    """The protocol's questions for one item (``inputs`` input images, a reference image or
    not), with the item's category overrides applied. MissingImage when a question shows a
    reference image the item does not have."""
    override = spec.categories.get(category) if category is not None else None
    values = {
        "instruction": instruction,
        "category": category or "",
        "hints": _fill(spec.hints_format, {"hints": hints}) if hints else "",
    }
    verbatim = spec.render == "verbatim"
    system_template = override.system if override and override.system is not None else spec.system
    system = _fill(system_template, values, verbatim)
    answer = spec.answer.expected if mode == "expected" else spec.answer.generate
    rendered = []
    for question in spec.questions_for(category):
        shown, variant_labels, variant_prompt = _shown(question, inputs, has_reference, variant)
        template = override.prompts.get(question.name, question.prompt) if override else None
        prompt = _fill(variant_prompt or template or question.prompt, values, verbatim)
        text = f"{prompt}\n\n{answer}" if answer else prompt
        labels = {**spec.image_labels, **question.labels, **(variant_labels or {})}
        images: list[str | ImageSlot] = []
        for role in shown:
            label = labels.get(role, "")
            if label:
                images.append(label)
            images.append(ImageSlot(role))
        parts = [text, *images] if spec.layout == "text_first" else [*images, text]
        rendered.append(
            RenderedQuestion(question.name, tuple(question.scores), system, tuple(parts))
        )
    return rendered
