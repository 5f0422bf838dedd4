"""Stable job ids and the edit settings that go into them.

A job id is the sha256 of a canonical JSON of everything that determines the job's result:
the same item, image bytes, instruction, parameters and model give the same id in every run, on
every machine, so a rerun skips finished work and never writes a second record for it. The id is
not sent to the services (they would not read it): skipping finished jobs is the client's job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from shared_schemas import EditorFamilyInfo, EditParameters, EditRequest, ModelInfo

SeedPolicy = Literal["fixed", "per-item", "random"]
JOB_ID_CHARS = 32


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _job_id(kind: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, **fields}, sort_keys=True, ensure_ascii=False)
    return f"{kind[0]}-{sha256_hex(canonical.encode())[:JOB_ID_CHARS]}"


# Model options that change what a model answers, beyond floating-point noise: results made
# with other values are another configuration, so they have other job ids, a restarted service
# set up otherwise stops the run (ModelChanged) and an endpoint set up otherwise is not mixed in.
# The rest only change how the same result is computed (compilation, attention kernels, the
# editor's deterministic kernels) or where it comes from (an endpoint's URL).
RESULT_OPTIONS = frozenset(
    {
        "lora",
        "lora_scale",
        "transformer_fp8",
        "step_cache",
        "step_cache_interval",
        "step_cache_warmup",
        "endpoint_model",  # what an OpenAI-compatible endpoint says it serves
        "top_logprobs",  # how many digits an endpoint's expected-mode score can see
    }
)


def model_key(model: ModelInfo | None) -> dict[str, Any]:
    """What identifies a model in a job id: its id and revision (content hash for tiny), the
    options that change its answers (RESULT_OPTIONS) when any is set, and the judge's
    deterministic mode when on (it plans each item alone, so its scores differ from batched
    ones by up to a few hundredths). Models without either keep the key of older runs."""
    if model is None:
        return {"id": None, "revision": None}
    key: dict[str, Any] = {"id": model.id, "revision": model.revision}
    options = {k: v for k, v in model.options.items() if k in RESULT_OPTIONS and v is not None}
    if options:
        key["options"] = options
    return key


def judge_key(model: ModelInfo | None) -> dict[str, Any]:
    """model_key for the judge, whose deterministic mode changes its scores (by up to a few
    hundredths: each item is computed alone); the editor's only picks deterministic kernels."""
    key = model_key(model)
    if model is not None and model.deterministic:
        key["deterministic"] = True
    return key


@dataclass(frozen=True, slots=True)
class EditSettings:
    """How every item of a run is edited. Seeds: ``fixed`` (one seed for all), ``per-item``
    (derived from the seed and the item id: reproducible, uncorrelated across items) or ``random``
    (the editor picks one and reports it)."""

    steps: int | None = None  # None: the editor family's default (Qwen-Image-Edit: 50)
    cfg: float | None = None  # true CFG, for families that take it (Qwen: 4.0 by default)
    negative_prompt: str = " "
    seed_policy: SeedPolicy = "per-item"
    seed: int = 42
    width: int | None = None
    height: int | None = None
    output_format: Literal["png", "jpeg", "webp"] = "png"
    # The editor family's own parameters by name (guidance_scale...): /v1/info lists them.
    params: dict[str, float] = field(default_factory=dict)

    def item_seed(self, item_id: str) -> int | None:
        if self.seed_policy == "fixed":
            return self.seed
        if self.seed_policy == "per-item":
            digest = sha256_hex(f"{self.seed}:{item_id}".encode())
            return int(digest[:8], 16)  # < 2**32, valid for every torch generator
        return None

    def parameters(self, seed: int | None) -> EditParameters:
        """These settings in the editor's wire form: the one place where ``steps`` and ``cfg``
        (the names of the flags, the config keys, run.json and the job ids) become
        ``num_inference_steps`` and ``true_cfg_scale``."""
        return EditParameters(
            negative_prompt=self.negative_prompt,
            num_inference_steps=self.steps,
            true_cfg_scale=self.cfg,
            parameters=dict(self.params),
            seed=seed,
            width=self.width,
            height=self.height,
            output_format=self.output_format,
        )

    def request(
        self, item_id: str, image: bytes, instruction: str, more: Sequence[bytes] = ()
    ) -> EditRequest:
        """The edit of one item: its first input image, its further ones (``more``, in order)."""
        parameters = self.parameters(self.item_seed(item_id))
        return EditRequest(
            image=image, images=list(more), instruction=instruction, **dict(parameters)
        )

    def resolved(self, family: EditorFamilyInfo | None) -> EditSettings:
        """These settings with the steps and true CFG left to the editor filled from its family's
        published defaults (/v1/info), so job ids and records name what was run: a Qwen run with
        the defaults keeps the ids of runs made when the CLI's defaults were 50 steps and CFG 4.0.
        An editor that publishes no family (a served endpoint) leaves them to itself."""
        if family is None:
            return self
        steps = self.steps if self.steps is not None else family.default_steps
        cfg = self.cfg
        if cfg is None:
            cfg = next((p.default for p in family.parameters if p.name == "true_cfg_scale"), None)
        return replace(self, steps=steps, cfg=cfg)

    def as_dict(self) -> dict[str, Any]:
        settings = asdict(self)
        if not settings["params"]:
            del settings["params"]  # as before families had parameters of their own
        return settings

    def check(self) -> None:
        """Raise pydantic's ValidationError now if the editor's schema refuses these settings,
        rather than once per item."""
        self.parameters(self.seed if self.seed_policy == "fixed" else None)


def edit_job_id(
    *,
    item_id: str,
    source_sha256: str,
    instruction: str,
    settings: EditSettings,
    editor_model: ModelInfo | None,
    input_sha256: Sequence[str] = (),
) -> str:
    """``input_sha256``: the item's further input images (none: the ids of older runs)."""
    fields: dict[str, Any] = {
        "item": item_id,
        "source": source_sha256,
        "instruction": instruction,
        "params": settings.as_dict(),
        "seed": settings.item_seed(item_id),
        "model": model_key(editor_model),
    }
    if input_sha256:
        fields["inputs"] = list(input_sha256)
    return _job_id("edit", fields)


def score_job_id(
    *,
    item_id: str,
    source_sha256: str,
    edited_sha256: str,
    instruction: str,
    category: str,
    hints: str | None,
    protocol: str,
    protocol_hash: str | None,
    mode: str,
    max_new_tokens: int,
    judge_model: ModelInfo | None,
    input_sha256: Sequence[str] = (),
    reference_sha256: str | None = None,
    variant: str | None = None,
) -> str:
    """``input_sha256`` / ``reference_sha256`` / ``variant``: the further inputs, the reference
    image and the question variant the judge is sent (none: the ids of older runs)."""
    extra: dict[str, Any] = {}
    if input_sha256:
        extra["inputs"] = list(input_sha256)
    if reference_sha256 is not None:
        extra["reference"] = reference_sha256
    if variant is not None:
        extra["variant"] = variant
    return _job_id(
        "score",
        {
            **extra,
            "item": item_id,
            "source": source_sha256,
            "edited": edited_sha256,
            "instruction": instruction,
            "category": category,
            "hints": hints,
            "protocol": protocol,
            "protocol_hash": protocol_hash,
            "mode": mode,
            # Only generate mode reads it: kept out of expected-mode ids to avoid needless reruns.
            "max_new_tokens": max_new_tokens if mode == "generate" else None,
            "model": judge_key(judge_model),
        },
    )
