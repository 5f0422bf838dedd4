"""Whole runs against scripted services: results, resume without repeats, failures, batching."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.benchmarks import Benchmark, Item, load_benchmark
from orchestrator.config import RunSettings, resolve_settings
from orchestrator.phases import EditPhase, PhaseContext
from orchestrator.progress import NullProgress
from orchestrator.retry import RetryPolicy
from orchestrator.runner import RunOutcome, run_benchmark
from orchestrator.store import JsonlLog, RunStore
from shared_schemas import TokenUsage
from tests.orchestrator.fakes import EDITOR, REWARD, FakeServices, error, instruction_of
from tests.support.waiting import until

POLICY = RetryPolicy(job_deadline_s=600, probe_interval_s=0.01)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def settings_for(benchmark: Path | str, out: Path, **changes: Any) -> RunSettings:
    return resolve_settings(
        {
            "benchmark": str(benchmark),
            "out": out,
            "editor_url": EDITOR,
            "reward_url": REWARD,
            "steps": 2,
            **changes,
        },
        environ={},
    )


def run(settings: RunSettings, services: FakeServices) -> RunOutcome:
    return asyncio.run(
        run_benchmark(
            settings, NullProgress(), transport=services.transport(), policy=POLICY, sleep=no_sleep
        )
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return JsonlLog(path).read()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_a_run_writes_every_result_and_the_reports(small_benchmark: Path, tmp_path: Path) -> None:
    services = FakeServices()
    out = tmp_path / "run"
    outcome = run(settings_for(small_benchmark, out), services)
    assert outcome.edit is not None and outcome.score is not None
    assert (outcome.edit.ok, outcome.edit.failed, outcome.score.ok) == (6, 0, 6)
    assert services.count("editor POST /v1/edits") == 6
    # Two batches of up to 4 items (the default items per request).
    assert sorted(len(b) for b in services.scored_batches) == [2, 4]

    results = lines(out / "results.jsonl")
    assert len(results) == 6 and len({r["item_id"] for r in results}) == 6
    assert all(r["edit_status"] == "ok" and r["scored"] for r in results)
    assert all((out / r["edited_image"]).is_file() for r in results)

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["categories"]) == {"color", "removal", "物理"}
    physics = summary["categories"]["物理"]
    assert physics["n_items"] == 2 and physics["overall"]["n"] == 2
    assert physics["judge_error_rate"] == 0.0 and physics["unscored"] == 0
    assert summary["overall"]["micro"]["overall"]["n"] == 6
    means = [c["overall"]["mean"] for c in summary["categories"].values()]
    assert summary["overall"]["macro"]["overall"] == pytest.approx(sum(means) / 3, abs=1e-3)
    assert summary["models"]["editor"] == ["fake-editor@rev1"]
    assert any("mean nothing" in w for w in summary["warnings"])

    with (out / "results.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {"q_editing_success", "q_naturalness"} <= set(rows[0])

    html = (out / "report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(html)
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 12  # source and edit of every item
    assert all(
        src and not src.startswith(("http", "/")) and (out / src).is_file() for src in images
    )
    assert "<svg" in html and "物理" in html
    assert "object at 0x" not in html and "Undefined" not in html

    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["services"]["editor"]["model"]["revision"] == "rev1"
    assert provenance["services"]["protocol"]["hash"] == "sha256:protocol-v1"
    assert provenance["settings"]["steps"] == 2
    assert provenance["invocations"][-1]["finished_at"]
    # What the phases counted is what provenance.json keeps, key for key, in its usual shape.
    edit_counts, score_counts = (provenance["invocations"][-1][p] for p in ("edit", "score"))
    assert (
        edit_counts
        == outcome.edit.model_dump()
        == {
            "planned": 6,
            "skipped": 0,
            "ok": 6,
            "failed": 0,
            "unscored": 0,
            "missing_edit": 0,
            "retries": 0,
            "requests": 6,
        }
    )
    assert score_counts == outcome.score.model_dump()
    assert (score_counts["ok"], score_counts["requests"]) == (6, 2)
    protocol = json.loads((out / "protocol.json").read_text(encoding="utf-8"))
    assert protocol["definition"] == {"system": "You judge."}
    assert summary["jobs"]["edit"] == {
        "planned": 6,
        "ok": 6,
        "failed_permanent": 0,
        "failed_transient_exhausted": 0,
        "pending": 0,
        "retries": 0,
        "max_attempts": 1,
    }
    assert summary["integrity"]["score"]["duplicate_ok_records"] == 0


async def _interrupt_after(
    settings: RunSettings, services: FakeServices, path: str, finished: int, written: Path
) -> None:
    """Run until ``finished`` requests to ``path`` have been answered and their records are in
    ``written``, then cancel (Ctrl-C)."""
    answered = asyncio.Event()
    count = 0
    original = services.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal count
        if request.url.path == path:
            if count >= finished:
                answered.set()
                await asyncio.Event().wait()  # hang until cancelled
            count += 1
        return await original(request)

    transport = httpx.MockTransport(handle)
    task = asyncio.create_task(
        run_benchmark(settings, NullProgress(), transport=transport, policy=POLICY, sleep=no_sleep)
    )
    await until(lambda: answered.is_set() or task.done(), f"{finished} requests to {path} answered")
    assert answered.is_set(), f"the run ended before {finished} requests to {path}: {task}"
    for _ in range(600):  # until the answered ones are written (bounded: 30 s)
        if written.exists() and len(lines(written)) >= finished:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_summary_sums_the_tokens_a_judge_endpoint_reported(
    small_benchmark: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    run(settings_for(small_benchmark, local), FakeServices())
    assert json.loads((local / "summary.json").read_text())["judge_usage"] is None

    remote = tmp_path / "remote"
    services = FakeServices(judge_usage=TokenUsage.of(prompt_tokens=100, completion_tokens=5))
    run(settings_for(small_benchmark, remote), services)
    summary = json.loads((remote / "summary.json").read_text())
    # 6 items x 2 questions, each reporting 100 + 5 tokens.
    assert summary["judge_usage"] == {
        "prompt_tokens": 1200,
        "completion_tokens": 60,
        "total_tokens": 1260,
        "questions": 12,
    }


def test_resume_after_an_interrupted_edit_phase_repeats_nothing(
    small_benchmark: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    settings = settings_for(small_benchmark, out, edit_concurrency=1)
    asyncio.run(_interrupt_after(settings, FakeServices(), "/v1/edits", 3, out / "edits.jsonl"))
    done = lines(out / "edits.jsonl")
    assert len(done) == 3

    again = FakeServices()
    outcome = run(settings_for(small_benchmark, out), again)
    assert again.count("editor POST /v1/edits") == 3  # only the unfinished ones
    assert outcome.edit is not None and outcome.edit.skipped == 3
    edits = lines(out / "edits.jsonl")
    assert len(edits) == 6 and len({r["job_id"] for r in edits}) == 6
    assert len(lines(out / "results.jsonl")) == 6


def test_resume_after_an_interrupted_score_phase_repeats_nothing(
    small_benchmark: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    settings = settings_for(small_benchmark, out, items_per_request=1, score_concurrency=1)
    asyncio.run(_interrupt_after(settings, FakeServices(), "/v1/scores", 2, out / "scores.jsonl"))
    assert len(lines(out / "scores.jsonl")) == 2

    again = FakeServices()
    run(settings, again)
    assert again.count("editor POST /v1/edits") == 0
    assert again.count("reward POST /v1/scores") == 4
    scores = lines(out / "scores.jsonl")
    assert len(scores) == 6 and len({r["job_id"] for r in scores}) == 6
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["overall"]["micro"]["scored"] == 6


def test_a_torn_last_line_is_redone_on_resume(small_benchmark: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(settings_for(small_benchmark, out, phase="edit"), FakeServices())
    log = out / "edits.jsonl"
    data = log.read_bytes().rstrip(b"\n")
    log.write_bytes(data[: data.rfind(b"\n") + 1] + data[data.rfind(b"\n") + 1 :][:40])
    again = FakeServices()
    run(settings_for(small_benchmark, out, phase="edit"), again)
    assert again.count("editor POST /v1/edits") == 1
    assert len(lines(log)) == 6


def test_a_deleted_edited_image_is_made_again(small_benchmark: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(settings_for(small_benchmark, out, phase="edit"), FakeServices())
    (out / lines(out / "edits.jsonl")[0]["image"]).unlink()
    again = FakeServices()
    run(settings_for(small_benchmark, out, phase="edit"), again)
    assert again.count("editor POST /v1/edits") == 1
    assert all((out / r["edited_image"]).is_file() for r in lines(out / "results.jsonl"))


def test_rerunning_a_finished_run_sends_no_job(small_benchmark: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(settings_for(small_benchmark, out), FakeServices())
    again = FakeServices()
    run(
        resolve_settings(
            {"out": out, "editor_url": EDITOR, "reward_url": REWARD},
            environ={},
            saved_identity=json.loads((out / "run.json").read_text())["identity"],
        ),
        again,
    )
    assert again.count("editor POST /v1/edits") == again.count("reward POST /v1/scores") == 0


def test_a_refused_item_is_recorded_and_the_run_goes_on(
    small_benchmark: Path, tmp_path: Path
) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response | None:
        if instruction_of(request) == "color edit number 1":
            return error(422, "invalid_image", "image is truncated")
        return None

    out = tmp_path / "run"
    services = FakeServices(before_edit=refuse)
    run(settings_for(small_benchmark, out), services)
    assert services.count("editor POST /v1/edits") == 6  # the 422 was not retried
    failed = [r for r in lines(out / "edits.jsonl") if r["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == {
        "service": "editor",
        "type": "invalid_image",
        "message": "image is truncated",
        "status": 422,
        "param": None,
    }
    assert failed[0]["retryable"] is False
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["categories"]["color"]["edit_failed"] == 1
    assert summary["jobs"]["edit"]["failed_permanent"] == 1
    assert summary["categories"]["color"]["overall"]["n"] == 1
    assert summary["overall"]["micro"]["scored"] == 5

    # A permanent failure is not retried on resume, unless asked to.
    again = FakeServices(before_edit=refuse)
    run(settings_for(small_benchmark, out), again)
    assert again.count("editor POST /v1/edits") == 0
    run(settings_for(small_benchmark, out, retry_failed=True), again)
    assert again.count("editor POST /v1/edits") == 1


def test_an_item_whose_retries_ran_out_is_redone_on_resume(
    small_benchmark: Path, tmp_path: Path
) -> None:
    # The counterpart of a permanent failure (not retried on resume unless asked to): a server
    # error that outlasted its retries is worth trying again on the next run, without asking.
    async def broken(request: httpx.Request) -> httpx.Response | None:
        if instruction_of(request) == "color edit number 1":
            return error(500, "server_error", "the editor broke")
        return None

    out = tmp_path / "run"
    first = FakeServices(before_edit=broken)
    run(settings_for(small_benchmark, out), first)
    assert first.count("editor POST /v1/edits") == 5 + 3  # three tries for the broken item
    [failed] = [r for r in lines(out / "edits.jsonl") if r["status"] == "failed"]
    assert failed["retryable"] is True
    jobs = json.loads((out / "summary.json").read_text(encoding="utf-8"))["jobs"]["edit"]
    assert (jobs["failed_transient_exhausted"], jobs["failed_permanent"]) == (1, 0)

    again = FakeServices()
    run(settings_for(small_benchmark, out), again)
    assert again.count("editor POST /v1/edits") == 1  # that item only
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["jobs"]["edit"]["ok"] == 6
    assert summary["overall"]["micro"]["scored"] == 6


def test_transient_failures_are_retried_not_recorded(small_benchmark: Path, tmp_path: Path) -> None:
    answers = iter([error(429, "queue_full", "full", "1"), error(503, "worker_died", "died")])

    async def flaky(request: httpx.Request) -> httpx.Response | None:
        return next(answers, None)

    services = FakeServices(before_edit=flaky)
    run(settings_for(small_benchmark, tmp_path / "run", edit_concurrency=1), services)
    edits = lines(tmp_path / "run" / "edits.jsonl")
    assert all(r["status"] == "ok" for r in edits)
    assert sum(r["retries"] for r in edits) == 2
    assert services.count("editor POST /v1/edits") == 8


def test_one_bad_item_does_not_fail_its_batch(small_benchmark: Path, tmp_path: Path) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response | None:
        if "removal edit number 0" in request.content.decode():
            return error(422, "invalid_request", "items.1.hints: too long")
        return None

    services = FakeServices(before_score=refuse)
    run(settings_for(small_benchmark, tmp_path / "run"), services)
    scores = lines(tmp_path / "run" / "scores.jsonl")
    assert sorted(r["status"] for r in scores) == ["failed"] + ["ok"] * 5
    assert [r["item_id"] for r in scores if r["status"] == "failed"] == ["removal-0"]
    # The summary counts it as its category's one judge failure, beside its scored batch mate.
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    removal = summary["categories"]["removal"]
    assert (removal["scored"], removal["judge_failed"], removal["overall"]["n"]) == (1, 1, 1)
    assert removal["judge_error_rate"] == 0.5


def test_unscored_answers_are_counted_not_averaged(tmp_path: Path) -> None:
    from tests.orchestrator.conftest import write_manifest

    rows = [
        {"id": f"x{i}", "category": category, "instruction": text}
        for i, (category, text) in enumerate(
            [
                ("c", "fine"),
                ("c", "unparseable answer"),
                ("c", "also fine"),
                ("d", "fine too"),
                ("e", "unparseable answer"),
            ]
        )
    ]
    bench = write_manifest(tmp_path / "b", rows)
    run(settings_for(bench, tmp_path / "run", mode="generate"), FakeServices())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    category = summary["categories"]["c"]
    assert (category["scored"], category["unscored"], category["overall"]["n"]) == (2, 1, 2)
    assert category["judge_error_rate"] == pytest.approx(1 / 3, abs=1e-3)
    # No mean takes the unscored item: not the category's, the items' (micro) nor the mean of
    # the category means (macro; c has two scored items and d one, so the two differ).
    overall = {r["item_id"]: r["overall"] for r in lines(tmp_path / "run" / "results.jsonl")}
    assert overall["x1"] is None
    c_mean = (overall["x0"] + overall["x2"]) / 2
    assert category["overall"]["mean"] == pytest.approx(c_mean, abs=1e-4)
    micro = summary["overall"]["micro"]["overall"]
    assert micro["n"] == 3
    assert micro["mean"] == pytest.approx(
        (overall["x0"] + overall["x2"] + overall["x3"]) / 3, abs=1e-4
    )
    macro = summary["overall"]["macro"]["overall"]
    assert macro == pytest.approx((c_mean + overall["x3"]) / 2, abs=1e-4)
    assert macro != pytest.approx(micro["mean"], abs=1e-3)
    # e's only answer is unscored: e is named, counted in no mean, and not a 0 in the macro.
    assert summary["categories"]["e"]["overall"]["n"] == 0
    assert summary["categories"]["e"]["overall"]["mean"] is None
    assert summary["overall"]["macro"]["categories_counted"] == 2
    assert summary["overall"]["macro"]["categories_without_scores"] == ["e"]


def test_score_only_judges_a_folder_of_outside_edits(small_benchmark: Path, tmp_path: Path) -> None:
    edited = tmp_path / "outside"
    (edited / "物理-0").parent.mkdir(parents=True, exist_ok=True)
    bench = load_benchmark(small_benchmark)
    for item, data in bench.iter_images(bench.items[:5]):
        suffix = ".png"
        (edited / f"{item.id}{suffix}").write_bytes(data)
    services = FakeServices()
    out = tmp_path / "run"
    outcome = run(
        settings_for(small_benchmark, out, phase="score", edited_dir=str(edited)), services
    )
    assert services.count("editor POST /v1/edits") == 0
    assert outcome.score is not None
    assert (outcome.score.ok, outcome.score.missing_edit) == (5, 1)
    results = {r["item_id"]: r for r in lines(out / "results.jsonl")}
    assert results["物理-0"]["scored"] and results["物理-0"]["edited_image"].endswith("物理-0.png")
    assert results["物理-1"]["score_status"] == "pending"


def test_edit_phase_keeps_two_requests_per_worker_in_flight(tmp_path: Path) -> None:
    from tests.orchestrator.conftest import write_manifest

    rows = [{"id": f"x{i}", "category": "c", "instruction": f"i{i}"} for i in range(16)]
    bench = write_manifest(tmp_path / "b", rows)
    services = FakeServices(workers=2, max_in_flight=10)
    four_at_once = asyncio.Event()

    async def hold_until_four_are_in_flight(_: httpx.Request) -> None:
        # Edits answer only once four were in flight together (or after 10 s, when the phase
        # never sends four): on a busy machine a fixed delay could let one finish first.
        if services.in_flight >= 4:
            four_at_once.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(four_at_once.wait(), timeout=10)

    services.before_edit = hold_until_four_are_in_flight
    run(settings_for(bench, tmp_path / "run", phase="edit"), services)
    assert services.max_seen_in_flight == 4
    assert len(services.edited_instructions) == 16


class CountingBenchmark(Benchmark):
    """Counts image reads, to prove images are streamed rather than read up front."""

    format = "counting"

    def __init__(self, inner: Benchmark) -> None:
        super().__init__(inner.path, inner.items)
        self.inner = inner
        self.reads = 0

    def iter_images(self, items: Iterable[Item]) -> Iterator[tuple[Item, bytes]]:
        for pair in self.inner.iter_images(items):
            self.reads += 1
            yield pair


def test_images_are_read_only_as_requests_can_be_sent(tmp_path: Path) -> None:
    from tests.orchestrator.conftest import write_manifest

    rows = [{"id": f"x{i}", "category": "c", "instruction": f"i{i}"} for i in range(20)]
    bench = CountingBenchmark(load_benchmark(write_manifest(tmp_path / "b", rows)))
    release = asyncio.Event()
    reads_while_blocked: list[int] = []

    async def block(request: httpx.Request) -> httpx.Response | None:
        reads_while_blocked.append(bench.reads)
        await release.wait()
        return None

    services = FakeServices(workers=1, max_in_flight=2, before_edit=block)

    async def go() -> None:
        async with httpx.AsyncClient(transport=services.transport()) as http:
            from orchestrator.clients import EditorClient
            from orchestrator.jobs import EditSettings

            with RunStore(tmp_path / "run") as store:
                ctx = PhaseContext(
                    bench, bench.items, store, NullProgress(), POLICY, sleep=no_sleep
                )
                phase = EditPhase(ctx, EditorClient(http, EDITOR), EditSettings(steps=2))
                task = asyncio.create_task(phase.run())
                await until(lambda: services.in_flight >= 2, "two edits in flight")
                await asyncio.sleep(0.05)
                assert bench.reads <= 3  # two in flight, at most one waiting for a slot
                release.set()
                counts = await task
                assert counts.ok == 20

    asyncio.run(go())


def test_gedit_bench_runs_as_published_with_per_language_summary(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from tests.orchestrator.test_benchmarks import gedit_table

    table, _ = gedit_table(n_per_lang=4)
    (tmp_path / "GEdit-Bench" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "GEdit-Bench" / "data" / "train-00000-of-00001.parquet")
    out = tmp_path / "run"
    services = FakeServices()
    run(settings_for(tmp_path / "GEdit-Bench", out, categories=["物理"]), services)
    results = lines(out / "results.jsonl")
    assert sorted(r["item_id"] for r in results) == [
        "物理/cn/k001",
        "物理/cn/k003",
        "物理/en/k001",
        "物理/en/k003",
    ]
    # Edits are laid out like GEdit's own scripts write them: <task>/<language>/<key>.png.
    assert (out / "edits" / "物理" / "en" / "k001.png").is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["languages"]) == {"cn", "en"}
    assert summary["languages"]["en"]["micro"]["scored"] == 2
    assert "Per instruction language" in (out / "report.html").read_text(encoding="utf-8")

    # The same layout scores as an outside edit folder (score-only, e.g. another model's edits).
    again = FakeServices()
    outcome = run(
        settings_for(
            tmp_path / "GEdit-Bench",
            tmp_path / "judged",
            phase="score",
            edited_dir=str(out / "edits"),
        ),
        again,
    )
    assert outcome.score is not None
    assert (outcome.score.ok, outcome.score.missing_edit) == (4, 4)  # only 物理 was edited
    assert again.count("editor POST /v1/edits") == 0
