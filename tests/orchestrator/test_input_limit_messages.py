"""An item with more input images than the editor takes is said in the editor's own terms: the
model and family its /v1/info reports, never a family the run did not use."""

from __future__ import annotations

import pytest

from orchestrator.metrics import MetricSet
from orchestrator.phases.base import TooManyInputs
from orchestrator.records import TOO_MANY_INPUTS, ErrorRecord, ModelsSeen, ResultRow
from orchestrator.report.summary import group_stats, warnings_for
from shared_schemas import EditorFamilyInfo, EditorInfo, ModelInfo

FAMILIES = ("qwen", "kontext", "2509", "2511", "longcat")


def editor_info(model: str, family: str, title: str, max_images: int) -> EditorInfo:
    return EditorInfo(
        version="0",
        model=ModelInfo(
            id=model, source="hub", model_class="Pipeline", dtype="bfloat16", meaningful=True
        ),
        family=EditorFamilyInfo(
            name=family,
            title=title,
            parameters=[],
            default_steps=28,
            min_steps=1,
            takes_size=False,
            takes_negative_prompt=False,
            prompt_token_limit=512,
            max_images=max_images,
            inpainting=False,
        ),
        devices=["cpu"],
        workers=[],
        queue_capacity=1,
        queue_depth=0,
        max_in_flight=2,
    )


def test_too_many_inputs_names_the_served_kontext_model_and_no_other_family() -> None:
    info = editor_info("black-forest-labs/FLUX.1-Kontext-dev", "flux-kontext", "FLUX.1 Kontext", 1)
    message = str(TooManyInputs("multi/21", 3, 1, info))
    assert message.startswith(
        "item 'multi/21' has 3 input images; black-forest-labs/FLUX.1-Kontext-dev "
        "(FLUX.1 Kontext) takes 1: not edited"
    )
    assert "family takes 3 or more" in message and "family.max_images" in message
    assert not any(name in message.lower() for name in ("qwen", "2509", "longcat"))


def test_too_many_inputs_says_the_limit_of_a_family_that_takes_several() -> None:
    info = editor_info("Qwen/Qwen-Image-Edit-2511", "qwen-image-edit", "Qwen-Image-Edit", 3)
    message = str(TooManyInputs("multi/7", 4, 3, info))
    assert "Qwen/Qwen-Image-Edit-2511 (Qwen-Image-Edit) takes at most 3" in message
    assert "2509" not in message


def test_the_summary_note_on_items_not_edited_names_no_model_family() -> None:
    row = ResultRow(
        item_id="multi/21",
        category="multi",
        instruction="put the cat on the sofa",
        source_thumb="thumbs/a.jpg",
        edited_thumb="",
        edit_status="failed",
        edit_error=ErrorRecord(type=TOO_MANY_INPUTS, message="m", param="image"),
        score_status="pending",
    )
    metrics = MetricSet.legacy()
    notes = warnings_for(
        [row], ModelsSeen(editor=[], judge=[], protocol_hash=[]), group_stats([row], metrics)
    )
    [note] = [n for n in notes if "input images" in n]
    assert note.startswith("1 item with more input images than the editor takes")
    assert not any(name in note.lower() for name in FAMILIES)


@pytest.mark.parametrize("limit", [1, 2])
def test_an_editor_that_reports_no_model_yet_is_called_the_editor(limit: int) -> None:
    info = editor_info("x", "flux-kontext", "FLUX.1 Kontext", limit).model_copy(
        update={"model": None}
    )
    assert "; the editor (FLUX.1 Kontext) takes" in str(TooManyInputs("a", 3, limit, info))
