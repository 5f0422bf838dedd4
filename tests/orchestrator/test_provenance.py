"""provenance.json is a typed model: every shape older editbench wrote reads, a rewrite keeps what
it read, damaged parts are left out with a warning naming the file and the part, and every reader
(resume, report, judge cost, compare, rescore, replica lines) reads the model.

The older shapes below are what runner.py (and later rescore.py) wrote at these commits of this
repository, read off ``git log -p -- orchestrator/src/orchestrator/runner.py``:
bd8b994 (the first: no handovers, no endpoints), 881e171 (``handovers``), f9e3d15 (``endpoints``
and ``models`` per service), d0184b2 (``rescores``), 0b66b1f (``score_wall_s``).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from orchestrator.compare import compare_runs, load_run
from orchestrator.judges import JudgeId
from orchestrator.metrics import metric_set
from orchestrator.provenance import PROVENANCE_SCHEMA, Provenance
from orchestrator.report.cost import judge_cost
from orchestrator.runner import rerender_report
from orchestrator.store import RunStore
from tests.orchestrator.fakes import FakeServices
from tests.orchestrator.test_compare import run_sample

MODEL = {
    "id": "Qwen/Qwen-Image-Edit",
    "source": "hub",
    "revision": "abc123",
    "model_class": "QwenImageEditPipeline",
    "dtype": "bfloat16",
    "meaningful": True,
}
PROTOCOL_BEFORE_METRICS = {
    "name": "viescore",
    "hash": "sha256:old",
    "description": "VIEScore-style",
    "questions": [{"name": "sc_edit", "group": "sc", "images": ["source", "edited"]}],
    "categories": [],
    "source": "builtin",
}
COUNTS = {
    "planned": 6,
    "skipped": 0,
    "ok": 6,
    "failed": 0,
    "unscored": 0,
    "missing_edit": 0,
    "retries": 0,
    "requests": 2,
}

# bd8b994: _start_provenance + the phases' services entries, nothing else.
FIRST: dict[str, Any] = {
    "started_at": "2026-11-24T10:00:00.000+00:00",
    "invocations": [
        {
            "started_at": "2026-11-24T10:00:00.000+00:00",
            "phase": "all",
            "selected": 6,
            "edit": COUNTS,
            "score": COUNTS,
            "finished_at": "2026-11-24T10:05:00.000+00:00",
        }
    ],
    "services": {
        "editor": {
            "url": "http://127.0.0.1:8001",
            "service": "editor",
            "version": "0.1.0",
            "model": MODEL,
            "devices": ["cuda:0"],
            "workers": [],
            "queue_capacity": 8,
            "queue_depth": 0,
            "max_in_flight": 9,
        },
        "reward": {"url": "http://127.0.0.1:8002", "service": "reward", "version": "0.1.0"},
        "protocol": PROTOCOL_BEFORE_METRICS,
    },
    "editbench": {
        "version": "0.1.0",
        "python": "3.11.2",
        "platform": "Linux",
        "host": "ci",
        "packages": {"httpx": "0.28.1", "pyarrow": None},
        "argv": ["editbench", "run"],
    },
    "benchmark": {
        "name": "gedit",
        "path": "/data/gedit",
        "format": "gedit",
        "items": 606,
        "selected": 6,
        "categories": ["color", "removal"],
        "fingerprint": "f" * 64,
    },
    "settings": {
        "steps": 50,
        "cfg": 4.0,
        "seed_policy": "per-item",
        "seed": 42,
        "mode": "expected",
    },
    "finished_at": "2026-11-24T10:05:00.000+00:00",
}


def _with_handovers() -> dict[str, Any]:  # 881e171
    data = copy.deepcopy(FIRST)
    data["handovers"] = [
        {
            "from": "editor",
            "to": "reward",
            "release_s": 0.65,
            "load_s": 4.3,
            "wall_s": 5.1,
            "started_at": "2026-11-24T10:03:00.000+00:00",
            "finished_at": "2026-11-24T10:03:05.100+00:00",
            "released": True,
            "loaded": True,
            "invocation": 0,
        }
    ]
    return data


def _with_endpoints() -> dict[str, Any]:  # f9e3d15
    data = _with_handovers()
    data["services"]["editor"]["endpoints"] = [
        {
            "url": f"http://10.0.1.{n}:8001",
            "given": "http://tasks.editor:8001",
            "state": "ready",
            "weight": 1,
            "jobs_ok": 3,
            "jobs_failed": n - 5,
            "set_aside": 0,
            "model": {"id": MODEL["id"], "revision": MODEL["revision"]},
            "last_error": None,
        }
        for n in (5, 6)
    ]
    data["services"]["editor"]["models"] = [{"id": MODEL["id"], "revision": MODEL["revision"]}]
    return data


def _with_rescores() -> dict[str, Any]:  # d0184b2, then 0b66b1f's score_wall_s
    data = _with_endpoints()
    data["rescores"] = [
        {
            "started_at": "2026-12-06T08:00:00.000+00:00",
            "reward_url": "http://127.0.0.1:8012",
            "protocol": "tri",
            "mode": "generate",
            "max_new_tokens": 512,
            "reward": {"service": "reward", "version": "0.2.0", "model": {**MODEL, "id": "j2"}},
            "protocol_info": {
                **PROTOCOL_BEFORE_METRICS,
                "name": "tri",
                "hash": "sha256:tri",
                "scale": {"min": 1, "max": 5},
                "metrics": [
                    {"name": "a", "label": "A", "rule": "score"},
                    {"name": "b", "label": "B", "rule": "score"},
                ],
                "headline": "b",
            },
            "protocol_definition": {"name": "tri", "questions": []},
            "score_wall_s": 4.0,
            "finished_at": "2026-12-06T08:01:00.000+00:00",
            "counts": {**COUNTS, "ok": 8},
            "judge": {
                "label": "j2:tri:generate",
                "model": "j2@abc123",
                "protocol": "tri",
                "protocol_hash": "sha256:tri",
                "mode": "generate",
                "slug": "j2-tri-generate",
            },
        }
    ]
    data["invocations"][0]["score_wall_s"] = 3.0
    return data


OLDER_SHAPES = {
    "bd8b994": lambda: copy.deepcopy(FIRST),
    "881e171": _with_handovers,
    "f9e3d15": _with_endpoints,
    "0b66b1f": _with_rescores,
}


def _read(tmp_path: Path, data: Any) -> Provenance:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "provenance.json").write_text(json.dumps(data), encoding="utf-8")
    return RunStore(tmp_path).read_provenance()


def _contains(whole: Any, part: Any) -> bool:
    """Every key and value of ``part`` is in ``whole`` (lists item by item)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and _contains(whole[k], v) for k, v in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(whole) == len(part)
            and all(_contains(w, p) for w, p in zip(whole, part, strict=True))
        )
    return bool(whole == part)


@pytest.mark.parametrize("commit", list(OLDER_SHAPES))
def test_every_older_shape_reads_without_a_warning_and_a_rewrite_keeps_it(
    commit: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original = OLDER_SHAPES[commit]()
    with caplog.at_level(logging.WARNING):
        provenance = _read(tmp_path, original)
    assert caplog.records == []
    assert provenance.schema_version == 0
    assert provenance.benchmark is not None and provenance.benchmark.format == "gedit"
    assert provenance.setting("steps") == 50
    (invocation,) = provenance.invocations
    assert invocation.score is not None and invocation.score.ok == 6
    editor = provenance.services.editor
    assert editor is not None and editor.model is not None
    assert editor.model.name == "Qwen/Qwen-Image-Edit@abc123"
    assert provenance.services.protocol is not None
    assert provenance.services.protocol.name == "viescore"
    assert len(provenance.handovers) == (0 if commit == "bd8b994" else 1)
    assert [e.jobs_ok for e in editor.endpoints or []] == (
        [] if commit in ("bd8b994", "881e171") else [3, 3]
    )

    RunStore(tmp_path).write_provenance(provenance)
    rewritten = json.loads((tmp_path / "provenance.json").read_text(encoding="utf-8"))
    assert rewritten["schema"] == PROVENANCE_SCHEMA
    assert _contains(rewritten, original)  # nothing it read is lost (queue_capacity, argv...)


def test_readers_take_their_figures_from_an_older_shape(tmp_path: Path) -> None:
    provenance = _read(tmp_path, _with_rescores())
    # Judge cost: the run's own judge from invocations[].score_wall_s, a rescore's from its entry.
    assert judge_cost([], [], None, provenance).score_wall_s == 3.0
    assert judge_cost([], [], None, provenance).items_per_s == 2.0
    rescored = JudgeId("j2@abc123", "tri", "sha256:tri", "generate")
    assert judge_cost([], [], None, provenance, rescored).items_per_s == 2.0
    # Metrics: the rescore's protocol description; the run's own (before metrics) is legacy.
    assert metric_set(provenance, "tri").names == ["a", "b"]
    assert metric_set(provenance, "tri").scale.max == 5
    assert metric_set(provenance, "viescore").names == ["sc", "pq", "overall"]


@pytest.mark.parametrize(
    ("damage", "left_out"),
    [
        ({"handovers": "x", "invocations": 3}, ["handovers", "invocations"]),
        (
            {"invocations": [7, {"score": {"ok": "six"}}]},
            ["invocations.0,", "invocations.0.score.ok"],
        ),
        (
            {"services": {"editor": {"endpoints": [{"jobs_ok": "x"}]}}},
            ["services.editor.endpoints.0.jobs_ok"],
        ),
        ({"services": {"protocol": {"hash": "h"}}}, ["services.protocol,"]),
        (
            {"rescores": [{"counts": []}], "settings": {"steps": "many"}},
            ["rescores.0.counts", "settings.steps"],
        ),
    ],
)
def test_a_damaged_part_is_left_out_with_a_warning_naming_file_and_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: dict[str, Any], left_out: list[str]
) -> None:
    data = {**copy.deepcopy(FIRST), **damage}
    with caplog.at_level(logging.WARNING):
        provenance = _read(tmp_path, data)
    warnings = [r.getMessage() for r in caplog.records]
    for part in left_out:
        assert any(f"{tmp_path / 'provenance.json'}: leaving out {part}" in w for w in warnings), (
            warnings
        )
    # The rest still reads.
    assert provenance.benchmark is not None and provenance.benchmark.name == "gedit"
    assert provenance.started_at == FIRST["started_at"]


def test_a_damaged_count_inside_a_part_loses_only_that_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = copy.deepcopy(FIRST)
    data["invocations"][0]["score"]["ok"] = "six"
    data["settings"]["steps"] = "many"
    with caplog.at_level(logging.WARNING):
        provenance = _read(tmp_path, data)
    (invocation,) = provenance.invocations
    assert invocation.score is not None and invocation.score.ok == 0  # no figure, not a guess
    assert invocation.score.requests == 2
    assert provenance.setting("steps") is None and provenance.setting("cfg") == 4.0
    assert "leaving out invocations.0.score.ok" in caplog.text
    assert "leaving out settings.steps" in caplog.text


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', '{"started_at": '])
def test_a_provenance_that_is_no_object_reads_as_empty_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    (tmp_path / "provenance.json").write_text(text, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        provenance = RunStore(tmp_path).read_provenance()
    assert provenance.invocations == [] and provenance.benchmark is None
    assert str(tmp_path / "provenance.json") in caplog.text


def test_an_old_run_folder_reports_resumes_and_compares_through_the_model(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run_sample(a, FakeServices())
    run_sample(b, FakeServices())
    # Folder a as the first editbench wrote provenance.json (its benchmark, this run's settings).
    now = json.loads((a / "provenance.json").read_text(encoding="utf-8"))
    old = copy.deepcopy(FIRST)
    old["benchmark"] = {k: now["benchmark"][k] for k in FIRST["benchmark"]}
    old["settings"] = {**now["settings"], "cfg": 7.5}
    (a / "provenance.json").write_text(json.dumps(old), encoding="utf-8")

    _, summary = rerender_report(a)
    assert summary.run is not None and summary.run["benchmark"]["name"] == "sample"
    assert summary.judge_cost is not None and summary.judge_cost.score_wall_s is None
    html = (a / "report.html").read_text(encoding="utf-8")
    assert "editor 0.1.0 at http://127.0.0.1:8001" in html  # the old services entry, shown

    result = compare_runs([load_run(a), load_run(b)])
    assert ("cfg", [7.5, None]) in [(d.setting, d.values) for d in result.differences]

    # A resume keeps the older invocation and appends its own, in the current schema.
    run_sample(a, FakeServices())
    resumed = json.loads((a / "provenance.json").read_text(encoding="utf-8"))
    assert resumed["schema"] == PROVENANCE_SCHEMA
    assert len(resumed["invocations"]) == 2
    assert resumed["invocations"][0] == old["invocations"][0] | {"score_wall_s": None}
    assert resumed["started_at"] == old["started_at"]


def test_a_handover_is_kept_in_the_shape_summary_and_report_read(tmp_path: Path) -> None:
    from orchestrator.handover import Handover
    from orchestrator.provenance import HandoverRecord

    handover = Handover("editor", "reward", 0.5, None, 1.25, "t0", "t1", True, None)
    provenance = Provenance()
    provenance.handovers.append(
        HandoverRecord.model_validate({**handover.as_record(), "invocation": 0})
    )
    tmp_path.mkdir(exist_ok=True)
    RunStore(tmp_path).write_provenance(provenance)
    written = json.loads((tmp_path / "provenance.json").read_text(encoding="utf-8"))
    assert written["handovers"] == [{**handover.as_record(), "invocation": 0}]  # "from", "to"
    assert RunStore(tmp_path).read_provenance().handovers[0].source == "editor"
