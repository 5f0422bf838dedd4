"""Questions that show more than an item's source and edit: its further inputs (input_2..),
a reference image, per-question labels and the variants an item's loader picks; the wire fields
that carry them, and the errors that name the field at fault."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reward_service.protocols.registry import parse_protocol
from reward_service.scorer import build_items, check_images, decode_items
from service_kit.errors import InvalidImage, InvalidInput
from shared_schemas import ScoreItem, ScoreRequest
from tests.support.images import image_bytes

PROTOCOL = parse_protocol(
    """
name: multi
description: every input, then the edit; the reference where the item has one
scale: {min: 1, max: 5}
layout: text_first
image_labels: {source: "This is the original image:", edited: "This is the edited image:"}
answer: {generate: "Score: N"}
questions:
  - name: inputs
    images: [source, input_2, input_3, edited]
    labels:
      source: "Reference Image 1:"
      input_2: "Reference Image 2:"
      input_3: "Reference Image 3:"
      edited: "Predicted Image:"
    prompt: "Compose: {instruction}"
  - name: view
    images: [source, edited]
    variants:
      ground_truth:
        images: [source, edited, reference]
        labels: {reference: "This is the ground truth image:"}
        prompt: "Compare with the ground truth: {instruction}"
      generated_first:
        images: [edited, source]
    prompt: "No ground truth: {instruction}"
  - name: quality
    images: [edited]
    labels: {edited: "This is the image to evaluate:"}
    prompt: "Rate the quality."
metrics:
  - {name: inputs, score: inputs, label: Inputs}
  - {name: view, score: view, label: View}
  - {name: quality, score: quality, label: Quality}
headline: quality
""",
    "test:multi",
    "file",
)


def item(inputs: int = 0, reference: bool = False, **extra: object) -> ScoreItem:
    return ScoreItem.model_validate(
        {
            "source_image": image_bytes(16, 16, seed=1),
            "edited_image": image_bytes(16, 16, seed=2),
            "input_images": [image_bytes(16, 16, seed=10 + n) for n in range(inputs)],
            "reference_image": image_bytes(16, 16, seed=3) if reference else None,
            "instruction": "put them together",
            **extra,
        }
    )


def sent(*items: ScoreItem) -> list[dict[str, list[object]]]:
    """Each item's questions as the judge gets them: text, or the image's pixels' seed tag."""
    request = ScoreRequest(items=list(items), protocol="multi", mode="generate")
    check_images(PROTOCOL, request)
    decoded = decode_items(request.items, max_pixels=10_000)
    built = build_items(PROTOCOL, request, decoded, "r")
    names = []
    for images, judge_item in zip(decoded, built, strict=True):
        by_index = {0: "source", 1: "edited"}
        by_index.update({2 + n: f"input_{n + 2}" for n in range(len(images.inputs))})
        if images.reference is not None:
            by_index[2 + len(images.inputs)] = "reference"
        assert judge_item.images == images.ordered()
        names.append(
            {
                q.key.rsplit("/", 1)[1]: [
                    f"<{by_index[p]}>" if isinstance(p, int) else p for p in q.content
                ]
                for q in judge_item.questions
            }
        )
    return names


def test_a_question_shows_every_input_the_item_has_in_order_with_its_own_labels() -> None:
    [three] = sent(item(inputs=2))
    assert three["inputs"] == [
        "Compose: put them together\n\nScore: N",
        "Reference Image 1:",
        "<source>",
        "Reference Image 2:",
        "<input_2>",
        "Reference Image 3:",
        "<input_3>",
        "Predicted Image:",
        "<edited>",
    ]
    # An item with fewer inputs shows those it has, and their labels only.
    [two] = sent(item(inputs=1))
    assert two["inputs"][1:] == [
        "Reference Image 1:",
        "<source>",
        "Reference Image 2:",
        "<input_2>",
        "Predicted Image:",
        "<edited>",
    ]


def test_a_question_label_overrides_the_protocols_label_for_that_question_only() -> None:
    [shown] = sent(item())
    assert shown["quality"][1:] == ["This is the image to evaluate:", "<edited>"]
    assert shown["view"][1:] == [
        "This is the original image:",
        "<source>",
        "This is the edited image:",
        "<edited>",
    ]


def test_an_item_is_asked_the_variant_its_loader_names_and_others_the_question() -> None:
    with_reference, without, first, unknown = sent(
        item(reference=True, variant="ground_truth"),
        item(reference=True),
        item(variant="generated_first"),
        item(variant="not_listed"),
    )
    assert with_reference["view"] == [
        "Compare with the ground truth: put them together\n\nScore: N",
        "This is the original image:",
        "<source>",
        "This is the edited image:",
        "<edited>",
        "This is the ground truth image:",
        "<reference>",
    ]
    assert without["view"][0] == "No ground truth: put them together\n\nScore: N"
    assert "<reference>" not in without["view"]
    assert unknown["view"] == without["view"]
    assert first["view"] == [
        "No ground truth: put them together\n\nScore: N",
        "This is the edited image:",
        "<edited>",
        "This is the original image:",
        "<source>",
    ]
    # Questions without variants are asked as written whatever the item's variant.
    assert first["quality"] == without["quality"]


def test_a_question_that_needs_a_reference_the_item_lacks_is_a_400_naming_the_field() -> None:
    needs = PROTOCOL.spec.model_copy(
        update={
            "questions": [
                PROTOCOL.spec.questions[0].model_copy(update={"images": ["reference", "edited"]})
            ]
        }
    )
    protocol = type(PROTOCOL)(spec=needs, hash="x", source="file", origin="test")
    request = ScoreRequest(items=[item(), item(reference=True)], protocol="multi")
    with pytest.raises(InvalidInput) as refused:
        check_images(protocol, request)
    assert refused.value.param == "items[0].reference_image"
    assert "reference" in str(refused.value)
    # The same for a variant that shows one.
    request = ScoreRequest(items=[item(variant="ground_truth")], protocol="multi")
    with pytest.raises(InvalidInput) as refused:
        check_images(PROTOCOL, request)
    assert refused.value.param == "items[0].reference_image"


def test_a_bad_further_input_or_reference_is_refused_naming_its_field() -> None:
    broken = image_bytes(16, 16)[:40]
    bad_input = ScoreItem.model_validate(
        {**item(inputs=2).model_dump(), "input_images": [image_bytes(16, 16), broken]}
    )
    with pytest.raises(InvalidImage) as refused:
        decode_items([bad_input], max_pixels=10_000)
    assert refused.value.param == "items[0].input_images[1]"
    bad_reference = ScoreItem.model_validate({**item().model_dump(), "reference_image": broken})
    with pytest.raises(InvalidImage) as refused:
        decode_items([item(), bad_reference], max_pixels=10_000)
    assert refused.value.param == "items[1].reference_image"


def test_the_wire_bounds_the_inputs_and_old_items_still_validate() -> None:
    with pytest.raises(ValidationError):
        item(inputs=6)  # source + 6 more: past input_6
    old = ScoreItem.model_validate_json(
        item().model_dump_json(exclude={"input_images", "reference_image"})
    )
    assert old.input_images == [] and old.reference_image is None
