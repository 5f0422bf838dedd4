"""Judge protocols as data: built-ins, user files, validation, rendering and content hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from reward_service.protocols import (
    ProtocolFileError,
    ProtocolRegistry,
    UnknownProtocol,
    canonical_json,
    render,
)
from reward_service.protocols.definition import ImageSlot
from reward_service.protocols.registry import builtin_protocols, parse_protocol

CUSTOM = (Path(__file__).parent / "data" / "physics_judge.yaml").read_text()


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_builtin_protocols_include_gedit_viescore_and_single() -> None:
    registry = ProtocolRegistry.load()
    assert {"gedit", "single", "viescore"} <= set(registry.names)
    assert all(p.source == "builtin" for p in registry)


def test_viescore_asks_two_questions_on_both_images_and_two_on_the_edit() -> None:
    info = ProtocolRegistry.load().get("viescore").info()
    asked = [(q.name, q.answers, q.images) for q in info.questions]
    assert asked == [
        ("editing_success", ["editing_success"], ["source", "edited"]),
        ("over_editing", ["over_editing"], ["source", "edited"]),
        ("naturalness", ["naturalness"], ["edited"]),
        ("artifacts", ["artifacts"], ["edited"]),
    ]
    assert [(m.name, m.rule) for m in info.metrics] == [
        ("sc", "min(editing_success, over_editing)"),
        ("pq", "min(naturalness, artifacts)"),
        ("overall", "geometric_mean(sc, pq)"),
    ]
    assert info.headline == "overall"
    assert (info.scale.min, info.scale.max) == (0, 10)
    assert info.modes == ["expected", "generate"]


def test_a_file_written_with_combine_reads_as_the_equivalent_metrics() -> None:
    legacy = parse_protocol(CUSTOM, "a.yaml", "file").info()
    assert [(m.name, m.rule) for m in legacy.metrics] == [("overall", "overall")]
    assert legacy.headline == "overall"


SCALE_1_5 = """
name: three-ways
description: A 1-5 protocol with three metrics.
scale: {min: 1, max: 5}
answer:
  expected: Answer with one integer from 1 to 5 and nothing else.
  generate: 'Answer "Score: N", N from 1 to 5.'
questions:
  - name: accuracy
    images: [source, edited]
    prompt: "How accurate is the edit? {instruction}"
  - name: quality
    images: [edited]
    prompt: How good does it look?
metrics:
  - {name: accuracy, label: Accuracy, score: accuracy}
  - {name: quality, label: Quality, score: quality}
  - {name: weighted, label: Weighted, weighted_mean: {accuracy: 2, quality: 1}}
headline: weighted
"""

MULTI = """
name: two-in-one
description: One question answering two scores as JSON.
scale: {min: 0, max: 25}
questions:
  - name: both
    images: [source, edited]
    prompt: 'Rate it. Reply {"score": [a, b]}.'
    answers: [fidelity, realism]
    parse: {format: json, key: score}
metrics:
  - {name: overall, label: Overall, min: [fidelity, realism]}
"""


def test_a_protocol_declares_its_scale_metrics_and_headline() -> None:
    info = parse_protocol(SCALE_1_5, "a.yaml", "file").info()
    assert (info.scale.min, info.scale.max) == (1, 5)
    assert [(m.name, m.label, m.rule) for m in info.metrics] == [
        ("accuracy", "Accuracy", "accuracy"),
        ("quality", "Quality", "quality"),
        ("weighted", "Weighted", "weighted_mean(accuracy*2, quality*1)"),
    ]
    assert info.headline == "weighted"
    assert info.modes == ["expected", "generate"]


def test_a_question_answering_several_scores_makes_the_protocol_generate_only() -> None:
    info = parse_protocol(MULTI, "a.yaml", "file").info()
    assert info.questions[0].answers == ["fidelity", "realism"]
    assert info.modes == ["generate"]
    assert info.headline == "overall"  # the only metric


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("    parse: {format: json, key: score}\n", ""), "declare parse"),
        (("min: [fidelity, realism]", "min: [fidelity, nope]"), "neither a score"),
        (("scale: {min: 0, max: 25}", "scale: {min: 5, max: 5}"), "below max"),
        (("scale: {min: 0, max: 25}", "scale: {min: 0, max: 5000}"), "less than or equal"),
        (("scale: {min: 0, max: 25}", "scale: {min: -5, max: 5}"), "greater than or equal"),
        (("{format: json, key: score}", "{format: regex}"), "pattern"),
        (
            ("{format: json, key: score}", "{format: regex, pattern: '(?P<fidelity>\\d+)'}"),
            "realism",
        ),
        (("answers: [fidelity, realism]", "answers: [fidelity, fidelity]"), "unique"),
    ],
)
def test_bad_scales_metrics_and_parse_rules_are_refused(
    change: tuple[str, str], problem: str
) -> None:
    with pytest.raises(ProtocolFileError, match=problem):
        parse_protocol(MULTI.replace(*change), "bad.yaml", "file")


def test_a_scale_beyond_two_digits_is_read_in_generate_mode_only() -> None:
    wide = SCALE_1_5.replace("{min: 1, max: 5}", "{min: 0, max: 100}")
    info = parse_protocol(wide, "wide.yaml", "file").info()
    assert (info.scale.max, info.modes) == (100, ["generate"])


def test_several_metrics_need_a_named_headline() -> None:
    with pytest.raises(ProtocolFileError, match="headline"):
        parse_protocol(SCALE_1_5.replace("headline: weighted\n", ""), "bad.yaml", "file")
    with pytest.raises(ProtocolFileError, match="headline 'nope'"):
        parse_protocol(SCALE_1_5.replace("headline: weighted", "headline: nope"), "b.yaml", "file")


def test_verbatim_text_first_rendering_keeps_the_text_exactly() -> None:
    text = MULTI.replace(
        """    prompt: 'Rate it. Reply {"score": [a, b]}.'""",
        """    prompt: "Rate it.\\n\\n\\n{instruction}\\n\\n{hints}\\n"
""",
    )
    spec = parse_protocol("render: verbatim\nlayout: text_first\n" + text, "a", "file").spec
    [question] = render(spec, instruction="add a hat", category=None, hints=None, mode="generate")
    assert question.parts == (
        "Rate it.\n\n\nadd a hat\n\n\n",
        ImageSlot("source"),
        ImageSlot("edited"),
    )
    assert question.answers == ("fidelity", "realism")


def test_hash_is_the_sha256_of_the_canonical_definition() -> None:
    for protocol in builtin_protocols():
        assert protocol.hash == hashlib.sha256(canonical_json(protocol.spec)).hexdigest()
        document = json.loads(canonical_json(protocol.spec))
        assert document["questions"][0]["prompt"]  # prompts are part of what is hashed


def test_hash_changes_when_a_prompt_changes() -> None:
    original = parse_protocol(CUSTOM, "a.yaml", "file")
    reworded = parse_protocol(
        CUSTOM.replace("How good is the edit?", "How good is this edit?"), "b.yaml", "file"
    )
    assert original.hash != reworded.hash


@pytest.mark.parametrize(
    "change",
    [
        ("You judge edits.", "You judge images."),  # system prompt
        ("Is the edit physically", "Is this edit physically"),  # a category prompt
        ("and nothing else.", "and nothing more."),  # the answer instruction
        ('"Before:"', '"Original:"'),  # an image label
    ],
)
def test_hash_changes_with_every_part_that_reaches_the_judge(change: tuple[str, str]) -> None:
    changed = parse_protocol(CUSTOM.replace(*change), "b.yaml", "file")
    assert changed.hash != parse_protocol(CUSTOM, "a.yaml", "file").hash


def test_hash_ignores_yaml_formatting_and_key_order() -> None:
    document = parse_protocol(CUSTOM, "a.yaml", "file").spec.model_dump(mode="json")
    as_json = json.dumps(dict(reversed(list(document.items()))), indent=4)  # JSON is YAML
    assert (
        parse_protocol(as_json, "b.yaml", "file").hash
        == parse_protocol(CUSTOM, "a.yaml", "file").hash
    )


def test_user_folder_protocols_are_offered_beside_the_builtins(tmp_path: Path) -> None:
    write(tmp_path, "physics.yaml", CUSTOM)
    write(tmp_path, "notes.txt", "not a protocol")
    registry = ProtocolRegistry.load(tmp_path)
    assert set(registry.names) == {"physics-judge", *ProtocolRegistry.load().names}
    info = registry.get("physics-judge").info()
    assert info.source == "file" and info.categories == ["physics"]


def test_a_user_protocol_cannot_shadow_a_builtin(tmp_path: Path) -> None:
    write(tmp_path, "mine.yaml", CUSTOM.replace("name: physics-judge", "name: viescore"))
    with pytest.raises(ProtocolFileError, match=r"mine\.yaml.*'viescore' is already defined"):
        ProtocolRegistry.load(tmp_path)


def test_a_missing_protocols_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolFileError, match="does not exist"):
        ProtocolRegistry.load(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (CUSTOM.replace("{instruction}\\n{hints}", "{instuction}"), "unknown template variable"),
        (CUSTOM.replace("combine: single", "combine: viescore"), "groups sc and pq"),
        (CUSTOM.replace("      overall: ", "      other: "), "unknown questions"),
        (CUSTOM.replace("images: [source, edited]", "images: []"), "images"),
        (CUSTOM.replace("images: [source, edited]", "images: [edited, edited]"), "once"),
        (CUSTOM.replace("combine: single", "combine: mean"), "combine"),
        (CUSTOM.replace("combine: single", "combine: single\nmetrics: []"), "not both"),
        (CUSTOM + "extra_field: 1\n", "extra_field"),
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "one mapping"),
    ],
)
def test_bad_protocol_files_are_refused_naming_the_file(text: str, problem: str) -> None:
    with pytest.raises(ProtocolFileError, match=problem) as raised:
        parse_protocol(text, "/protocols/bad.yaml", "file")
    assert str(raised.value).startswith("/protocols/bad.yaml: ")


def test_unknown_protocol_error_names_it_and_the_choices() -> None:
    with pytest.raises(UnknownProtocol) as raised:
        ProtocolRegistry.load().get("nope")
    assert "'nope'" in raised.value.message and "single, viescore" in raised.value.message
    assert raised.value.status_code == 400 and raised.value.param == "protocol"


def test_rendering_fills_variables_and_leaves_other_braces_alone() -> None:
    spec = parse_protocol(CUSTOM, "a.yaml", "file").spec
    [question] = render(
        spec, instruction="add a hat", category="style", hints="a red hat", mode="generate"
    )
    assert question.system == "You judge edits. Category style."
    assert question.parts[:4] == ("Before:", ImageSlot("source"), "After:", ImageSlot("edited"))
    text = question.parts[-1]
    assert isinstance(text, str)
    assert text.startswith("Instruction: add a hat\nAdditional guidance for this item: a red hat")
    assert text.endswith('end with "Score: N". Reply as {"score": N} if you prefer.')


def test_absent_hints_leave_no_gap() -> None:
    spec = parse_protocol(CUSTOM, "a.yaml", "file").spec
    [question] = render(spec, instruction="add a hat", category=None, hints=None, mode="expected")
    assert question.parts[-1] == (
        "Instruction: add a hat\nHow good is the edit?\n\n"
        "Answer with one integer from 0 to 10 and nothing else."
    )


def test_a_category_selects_its_own_system_and_question_prompts() -> None:
    spec = parse_protocol(CUSTOM, "a.yaml", "file").spec
    [question] = render(
        spec, instruction="drop the ball", category="physics", hints=None, mode="expected"
    )
    assert question.system == "You are a physicist judging edits."
    assert "Is the edit physically plausible?" in str(question.parts[-1])


def test_expected_mode_questions_end_with_the_answer_instruction() -> None:
    spec = ProtocolRegistry.load().get("viescore").spec
    questions = render(spec, instruction="x", category=None, hints=None, mode="expected")
    for question in questions:
        assert str(question.parts[-1]).endswith(
            "Answer with one integer from 0 to 10 and nothing else."
        )
    assert [sum(isinstance(p, ImageSlot) for p in q.parts) for q in questions] == [2, 2, 1, 1]


def test_the_readmes_worked_example_is_a_valid_protocol() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Writing a protocol", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    info = parse_protocol(example, "README.md", "file").info()
    assert (info.scale.min, info.scale.max) == (1, 5)
    assert [m.name for m in info.metrics] == ["accuracy", "realism", "blend"]
    assert info.metrics[2].rule == "weighted_mean(accuracy*3, realism*1)"
    assert info.headline == "blend" and info.modes == ["expected", "generate"]
