"""What a judge protocol is (a validated YAML document) and how it renders into questions.

A protocol names its questions (each with a score group and the images it shows), the system
prompt, the prompt of each question, per-category overrides of both, and the sentence that asks
for the answer in each mode. Templates may use ``{instruction}``, ``{category}`` and ``{hints}``;
any other ``{name}`` is refused when the file is loaded (so a typo cannot silently reach the
judge), while other braces, such as a JSON example, are left alone. A line holding only a
variable that is empty (no hints, say) is dropped, runs of blank lines collapse to one and the
result is stripped, so an absent hint leaves no gap.

A question's user turn is: for each of its images, the image's label (if any) and the image;
then the rendered prompt, a blank line, and the mode's answer instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reward_service.scoring import CombineRule
from shared_schemas.scores import ImageRole, QuestionGroup

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


class QuestionSpec(_Spec):
    name: str = Field(pattern=_NAME)
    group: QuestionGroup | None = None
    images: list[ImageRole] = Field(min_length=1, max_length=2)
    prompt: str = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _prompt_variables(cls, prompt: str) -> str:
        return _check_template(prompt)

    @field_validator("images")
    @classmethod
    def _distinct(cls, images: list[ImageRole]) -> list[ImageRole]:
        if len(set(images)) != len(images):
            raise ValueError("an image may be shown once per question")
        return images


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


class AnswerSpec(_Spec):
    """The last sentence of every question, per mode."""

    expected: str = Field(
        min_length=1,
        description="Must make the score's first digit the very next token, e.g. 'Answer with "
        "one integer from 0 to 10 and nothing else.'",
    )
    generate: str = Field(min_length=1, description="Ask for brief reasoning, then 'Score: N'.")


class ProtocolSpec(_Spec):
    name: str = Field(pattern=_NAME)
    description: str = Field(min_length=1)
    combine: CombineRule
    system: str = ""
    image_labels: dict[ImageRole, str] = Field(default_factory=dict)
    hints_format: str = "Additional guidance for this item: {hints}"
    answer: AnswerSpec
    questions: list[QuestionSpec] = Field(min_length=1, max_length=16)
    categories: dict[str, CategorySpec] = Field(default_factory=dict)

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
        """Images one item puts through the model: questions showing the same images (after
        the same system prompt) share one prefill of them."""
        shown = {tuple(q.images) for q in self.questions}
        return max(1, sum(len(images) for images in shown))

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [q.name for q in self.questions]
        if len(set(names)) != len(names):
            raise ValueError("question names must be unique")
        for category, spec in self.categories.items():
            unknown = sorted(set(spec.prompts) - set(names))
            if unknown:
                raise ValueError(f"category {category!r} overrides unknown questions {unknown}")
        groups = [q.group for q in self.questions]
        if self.combine == "viescore" and not ({"sc", "pq"} <= set(groups) <= {"sc", "pq"}):
            raise ValueError("combine: viescore needs questions in groups sc and pq, and no others")
        if self.combine == "single" and len(self.questions) != 1:
            raise ValueError("combine: single needs exactly one question")
        return self


@dataclass(frozen=True, slots=True)
class ImageSlot:
    """Where one of the item's images goes in a question's user turn."""

    role: ImageRole


@dataclass(frozen=True, slots=True)
class RenderedQuestion:
    """One question for one item: the user turn holds text and image slots, in order."""

    name: str
    group: QuestionGroup | None
    system: str
    parts: tuple[str | ImageSlot, ...]


def _fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        if not value:  # a line holding only an empty variable goes away with it
            template = re.sub(rf"(?m)^[ \t]*\{{{name}\}}[ \t]*(?:\n|$)", "", template)
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def render(
    spec: ProtocolSpec,
    *,
    instruction: str,
    category: str | None,
    hints: str | None,
    mode: Mode,
) -> list[RenderedQuestion]:
    """The protocol's questions for one item, with the item's category overrides applied."""
    override = spec.categories.get(category) if category is not None else None
    values = {
        "instruction": instruction,
        "category": category or "",
        "hints": _fill(spec.hints_format, {"hints": hints}) if hints else "",
    }
    system_template = override.system if override and override.system is not None else spec.system
    system = _fill(system_template, values)
    answer = spec.answer.expected if mode == "expected" else spec.answer.generate
    rendered = []
    for question in spec.questions:
        template = override.prompts.get(question.name, question.prompt) if override else None
        prompt = _fill(template or question.prompt, values)
        parts: list[str | ImageSlot] = []
        for role in question.images:
            label = spec.image_labels.get(role, "")
            if label:
                parts.append(label)
            parts.append(ImageSlot(role))
        parts.append(f"{prompt}\n\n{answer}")
        rendered.append(RenderedQuestion(question.name, question.group, system, tuple(parts)))
    return rendered
