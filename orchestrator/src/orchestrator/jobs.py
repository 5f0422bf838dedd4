"""Stable job ids and the edit settings that go into them.

A job id is the sha256 of a canonical JSON of everything that determines the job's result:
the same item, image bytes, instruction, parameters and model give the same id in every run, on
every machine, so a rerun skips finished work and never writes a second record for it. The id is
not sent to the services (they would not read it): skipping finished jobs is the client's job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shared_schemas import EditParameters, EditRequest, ModelInfo

SeedPolicy = Literal["fixed", "per-item", "random"]
JOB_ID_CHARS = 32


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _job_id(kind: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, **fields}, sort_keys=True, ensure_ascii=False)
    return f"{kind[0]}-{sha256_hex(canonical.encode())[:JOB_ID_CHARS]}"


def model_key(model: ModelInfo | None) -> dict[str, str | None]:
    """What identifies a model in a job id: its id and revision (content hash for tiny)."""
    if model is None:
        return {"id": None, "revision": None}
    return {"id": model.id, "revision": model.revision}


@dataclass(frozen=True, slots=True)
class EditSettings:
    """How every item of a run is edited. Seeds: ``fixed`` (one seed for all), ``per-item``
    (derived from the seed and the item id: reproducible, uncorrelated across items) or ``random``
    (the editor picks one and reports it)."""

    steps: int = 50
    cfg: float = 4.0
    negative_prompt: str = " "
    seed_policy: SeedPolicy = "per-item"
    seed: int = 42
    width: int | None = None
    height: int | None = None
    output_format: Literal["png", "jpeg", "webp"] = "png"

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
            seed=seed,
            width=self.width,
            height=self.height,
            output_format=self.output_format,
        )

    def request(self, item_id: str, image: bytes, instruction: str) -> EditRequest:
        parameters = self.parameters(self.item_seed(item_id))
        return EditRequest(image=image, instruction=instruction, **dict(parameters))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

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
) -> str:
    return _job_id(
        "edit",
        {
            "item": item_id,
            "source": source_sha256,
            "instruction": instruction,
            "params": settings.as_dict(),
            "seed": settings.item_seed(item_id),
            "model": model_key(editor_model),
        },
    )


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
) -> str:
    return _job_id(
        "score",
        {
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
            "model": model_key(judge_model),
        },
    )
