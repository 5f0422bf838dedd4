"""Stable job ids: the same inputs give the same id; any input that changes a result changes it."""

from __future__ import annotations

from orchestrator.jobs import EditSettings, edit_job_id, score_job_id
from shared_schemas import EditorFamilyInfo, FamilyParameterInfo, ModelInfo

MODEL = ModelInfo(
    id="m", source="hub", revision="r1", model_class="P", dtype="bf16", meaningful=True
)


def edit_id(**changes: object) -> str:
    args: dict[str, object] = {
        "item_id": "a",
        "source_sha256": "s",
        "instruction": "i",
        "settings": EditSettings(),
        "editor_model": MODEL,
    }
    args.update(changes)
    return edit_job_id(**args)  # type: ignore[arg-type]


def test_edit_job_id_is_stable() -> None:
    # The same in every process and release (a resume finds older run folders' edits by it):
    # a value fixed here, not one computed twice in this process.
    assert edit_id() == "e-75139dcc0ebd03e4bb455ac01c4d9f82"
    assert edit_id().startswith("e-") and len(edit_id()) == 34


def test_edit_job_id_changes_with_every_input() -> None:
    variants = {
        edit_id(item_id="b"),
        edit_id(source_sha256="t"),
        edit_id(instruction="j"),
        edit_id(settings=EditSettings(steps=8)),
        edit_id(settings=EditSettings(cfg=1.0)),
        edit_id(settings=EditSettings(seed=1)),
        edit_id(settings=EditSettings(width=512, height=512)),
        edit_id(editor_model=MODEL.model_copy(update={"revision": "r2"})),
    }
    assert edit_id() not in variants
    assert len(variants) == 8


def test_per_item_seeds_are_reproducible_and_differ_between_items() -> None:
    settings = EditSettings(seed_policy="per-item", seed=42)
    # The same in every process and release: older run folders' records name these seeds.
    assert (settings.item_seed("a"), settings.item_seed("b")) == (2534622329, 3315821685)
    assert settings.item_seed("a") != settings.item_seed("b")
    assert EditSettings(seed_policy="fixed", seed=42).item_seed("a") == 42
    assert EditSettings(seed_policy="random").item_seed("a") is None


def test_score_job_id_depends_on_edit_protocol_and_judge() -> None:
    args: dict[str, object] = {
        "item_id": "a",
        "source_sha256": "s",
        "edited_sha256": "e",
        "instruction": "i",
        "category": "c",
        "hints": None,
        "protocol": "viescore",
        "protocol_hash": "h",
        "mode": "expected",
        "max_new_tokens": 512,
        "judge_model": MODEL,
    }
    base = score_job_id(**args)  # type: ignore[arg-type]
    for key, value in (
        ("edited_sha256", "f"),
        ("protocol_hash", "h2"),
        ("mode", "generate"),
        ("judge_model", MODEL.model_copy(update={"id": "other"})),
    ):
        assert score_job_id(**{**args, key: value}) != base  # type: ignore[arg-type]
    # max_new_tokens matters only when the judge generates.
    assert score_job_id(**{**args, "max_new_tokens": 64}) == base  # type: ignore[arg-type]


def configured(**options: object) -> ModelInfo:
    return MODEL.model_copy(update={"options": options})


def test_options_that_change_the_images_change_the_edit_job_id() -> None:
    ids = {
        edit_id(editor_model=configured(**{name: value}))
        for name, value in (
            ("transformer_fp8", "row"),
            ("step_cache_interval", 4),
            ("step_cache", 0.1),
            ("lora", "some/lora"),
        )
    }
    assert len(ids) == 4 and edit_id() not in ids
    assert edit_id(editor_model=configured(transformer_fp8="row")) != edit_id(
        editor_model=configured(transformer_fp8="tensor")
    )


def test_options_that_only_change_how_an_edit_is_computed_keep_its_id() -> None:
    # Existing run folders made without the result-changing options resume without redoing work.
    same = configured(compile="regional", attention_backend="_native_cudnn", deterministic=True)
    assert edit_id(editor_model=same) == edit_id()
    assert edit_id(editor_model=MODEL.model_copy(update={"deterministic": True})) == edit_id()


def score_id(judge: ModelInfo) -> str:
    return score_job_id(
        item_id="a",
        source_sha256="s",
        edited_sha256="e",
        instruction="i",
        category="c",
        hints=None,
        protocol="viescore",
        protocol_hash="h",
        mode="expected",
        max_new_tokens=512,
        judge_model=judge,
    )


def test_the_judges_deterministic_mode_changes_the_score_job_id() -> None:
    # Its scores differ from batched ones by a few hundredths: a resumed run does not mix them.
    deterministic = MODEL.model_copy(update={"deterministic": True})
    assert score_id(deterministic) != score_id(MODEL)
    assert score_id(MODEL.model_copy(update={"options": {"attn_implementation": "sdpa"}})) == (
        score_id(MODEL)
    )


def test_an_endpoint_judges_reported_model_and_digits_change_the_score_job_id() -> None:
    endpoint = configured(base_url="http://a/v1", endpoint_model="gpt-x-1", top_logprobs=20)
    assert score_id(endpoint) != score_id(MODEL)
    assert score_id(endpoint) != score_id(
        configured(base_url="http://a/v1", endpoint_model="gpt-x-2", top_logprobs=20)
    )
    # The same endpoint model behind another URL (several endpoints of one run) is the same judge.
    assert score_id(endpoint) == score_id(
        configured(base_url="http://b/v1", endpoint_model="gpt-x-1", top_logprobs=20)
    )


def _family(name: str, steps: int, cfg: float | None) -> EditorFamilyInfo:
    parameters = []
    if cfg is not None:
        parameters.append(
            FamilyParameterInfo(
                name="true_cfg_scale", default=cfg, minimum=1.0, maximum=20.0, description="CFG"
            )
        )
    return EditorFamilyInfo(
        name=name,
        title=name,
        parameters=parameters,
        default_steps=steps,
        min_steps=1,
        takes_size=True,
        takes_negative_prompt=True,
        prompt_token_limit=1024,
        max_images=1,
        inpainting=False,
    )


def test_a_run_left_to_the_qwen_familys_defaults_keeps_the_ids_of_older_runs() -> None:
    # The id this edit had when the CLI's defaults were 50 steps and true CFG 4.0 (df2b86a):
    # run folders made then resume without redoing their edits.
    resolved = EditSettings().resolved(_family("qwen-image-edit", 50, 4.0))
    assert (resolved.steps, resolved.cfg) == (50, 4.0)
    assert edit_id(settings=resolved) == "e-86da2dec3b7ff7a32d2ff0200accf492"


def test_family_defaults_fill_only_what_the_run_left_open() -> None:
    kontext = _family("flux-kontext", 28, None)
    assert EditSettings().resolved(kontext).steps == 28
    assert EditSettings().resolved(kontext).cfg is None
    assert EditSettings(steps=8).resolved(kontext).steps == 8
    assert EditSettings(cfg=2.0).resolved(_family("qwen-image-edit", 50, 4.0)).cfg == 2.0
    # Another family's default is another configuration: another id.
    assert edit_id(settings=EditSettings().resolved(kontext)) != edit_id(
        settings=EditSettings().resolved(_family("qwen-image-edit", 50, 4.0))
    )
    # An editor that publishes no family (a served endpoint) keeps the settings as given.
    assert EditSettings().resolved(None) == EditSettings()
