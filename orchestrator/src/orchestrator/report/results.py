"""One row per planned item: its edit and its score, joined from the run folder's logs.

For each item the latest successful record wins, else the latest failure. A score is used only if
it judged the image the item's edit record points to (a re-edited item's old score is stale).
"""

from __future__ import annotations

from typing import Any

from orchestrator.store import Record, RunStore


def _pick(records: list[Record]) -> Record | None:
    ok = [r for r in records if r.get("status") == "ok"]
    if ok:
        return ok[-1]
    return records[-1] if records else None


def _group(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {}
    for record in records:
        item_id = record.get("item_id")
        if isinstance(item_id, str):
            grouped.setdefault(item_id, []).append(record)
    return grouped


def _model_name(model: Any) -> str | None:
    if not isinstance(model, dict):
        return None
    revision = model.get("revision")
    return f"{model.get('id')}@{revision}" if revision else str(model.get("id"))


def integrity(store: RunStore) -> dict[str, Any]:
    """What the logs hold: records, and ok records beyond one per job (must be 0)."""
    found: dict[str, Any] = {}
    for name, log in (("edit", store.edits), ("score", store.scores)):
        records = log.read()
        ok = [r.get("job_id") for r in records if r.get("status") == "ok"]
        found[name] = {
            "records": len(records),
            "jobs": len({r.get("job_id") for r in records}),
            "duplicate_ok_records": len(ok) - len(set(ok)),
        }
    return found


def build_rows(store: RunStore) -> list[dict[str, Any]]:
    """The joined per-item view of a run folder (what results.jsonl holds)."""
    plan = store.read_plan()
    edits = _group(store.edits.read())
    scores = _group(store.scores.read())
    rows = []
    for item in plan:
        item_id = item["id"]
        edit = _pick(edits.get(item_id, []))
        edited_sha = edit.get("image_sha256") if edit and edit.get("status") == "ok" else None
        candidates = [
            s
            for s in scores.get(item_id, [])
            if edited_sha is None or s.get("edited_sha256") == edited_sha
        ]
        score = _pick(candidates)
        result = score.get("score") if score and score.get("status") == "ok" else None
        rows.append(
            {
                "item_id": item_id,
                "category": item["category"],
                "language": item.get("language"),
                "instruction": item["instruction"],
                "hints": item.get("hints"),
                "source": item.get("source"),
                "extra": item.get("extra") or {},
                "source_thumb": store.thumb_relpath("source", item_id),
                "edit_status": edit["status"] if edit else "pending",
                "edit_job_id": edit.get("job_id") if edit else None,
                "edit_error": edit.get("error") if edit and edit["status"] != "ok" else None,
                "edit_retryable": edit.get("retryable") if edit else None,
                "edit_attempts": edit.get("attempts") if edit else None,
                "edit_retries": edit.get("retries") if edit else None,
                "edited_image": (
                    edit.get("image")
                    if edit and edit["status"] == "ok"
                    else (score.get("edited_image") if score else None)
                ),
                "edited_thumb": store.thumb_relpath("edited", item_id),
                "seed": edit.get("seed") if edit else None,
                "edit_s": (edit.get("response") or {}).get("timings", {}).get("edit_s")
                if edit
                else None,
                "editor_model": _model_name(edit.get("model")) if edit else None,
                "editor_meaningful": (edit.get("model") or {}).get("meaningful") if edit else None,
                "score_status": score["status"] if score else "pending",
                "score_job_id": score.get("job_id") if score else None,
                "score_error": score.get("error") if score and score["status"] != "ok" else None,
                "score_retryable": score.get("retryable") if score else None,
                "score_attempts": score.get("attempts") if score else None,
                "score_retries": score.get("retries") if score else None,
                "scored": bool(result and result.get("scored")),
                "sc": result.get("sc") if result else None,
                "pq": result.get("pq") if result else None,
                "overall": result.get("overall") if result else None,
                "questions": result.get("questions") if result else None,
                "protocol": score.get("protocol") if score else None,
                "protocol_hash": score.get("protocol_hash") if score else None,
                "mode": score.get("mode") if score else None,
                "judge_model": _model_name(score.get("model")) if score else None,
                "judge_meaningful": (score.get("model") or {}).get("meaningful") if score else None,
            }
        )
    return rows
