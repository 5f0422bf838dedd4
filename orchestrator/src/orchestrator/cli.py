"""The ``editbench`` command line: thin. Parse, resolve settings, call the runner, show results."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shlex
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from orchestrator import __version__
from orchestrator.benchmarks import BenchmarkError
from orchestrator.benchmarks.sample import write_sample
from orchestrator.clients import (
    EditorClient,
    RewardClient,
    ServiceCallError,
    make_http_client,
    what_to_do,
)
from orchestrator.config import ConfigError, RunSettings, resolve_settings
from orchestrator.endpoints.opening import open_editor, open_reward
from orchestrator.endpoints.pooled import close_clients, endpoint_records
from orchestrator.endpoints.urls import first_url
from orchestrator.judges import JudgeNotFound
from orchestrator.metrics import answer_values
from orchestrator.phases import ServiceNotReady
from orchestrator.progress import LineProgress, PhaseProgress, RichProgress
from orchestrator.records import Summary
from orchestrator.report.tables import summary_tables
from orchestrator.runner import default_out, read_saved_identity, rerender_report, run_benchmark
from orchestrator.store import JsonlLog, RunFolderBusy, RunStore
from orchestrator.terminal import LogLineFormatter, SafeConsole
from orchestrator.wording import counted
from shared_schemas import ScoreItem, ScoreRequest

_OS_ERROR_HINTS = {
    errno.EACCES: "you may not write (or read) there: choose another place (--out, -o, or the "
    "folder argument) or fix the permissions",
    errno.EPERM: "you may not write (or read) there: choose another place (--out, -o, or the "
    "folder argument) or fix the permissions",
    errno.EROFS: "that file system is read-only: choose another place (--out, -o, or the folder "
    "argument)",
    errno.EEXIST: "a file is where a folder is needed: choose another path, or move the file",
    errno.ENOTDIR: "a file is where a folder is needed: choose another path, or move the file",
    errno.EISDIR: "a folder is where a file is needed: choose another path",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
}


class _Editbench(typer.Typer):
    """The app, whose file-system errors (an --out that is a file, a read-only folder, a full
    disk) end in one paragraph naming the path and what to do, never a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except OSError as exc:
            where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name)
            hint = _OS_ERROR_HINTS.get(exc.errno or 0, "fix that")
            err_console.print(
                f"[red]error:[/] {escape(where or 'a file')}: {escape(exc.strerror or str(exc))}; "
                f"{escape(hint)}, then run the same command again (a run folder keeps every "
                "finished job).",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(1)


app = _Editbench(
    name="editbench",
    help="Benchmark instruction-based image editing: edit with the editor service, judge with "
    "the reward service, report per category.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = SafeConsole()
err_console = SafeConsole(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML or YAML settings file (also EDITBENCH_CONFIG).",
        exists=True,
        dir_okay=False,
    ),
]
EditorUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--editor-url",
        help="Editor service; several: repeat the flag or comma-separate, each a replica (a name "
        "that resolves to several addresses is one per address) (env EDITBENCH_EDITOR_URL).",
    ),
]
RewardUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--reward-url",
        help="Reward service; several: repeat the flag or comma-separate, as --editor-url "
        "(env EDITBENCH_REWARD_URL).",
    ),
]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug.")]
JudgeOpt = Annotated[
    str | None,
    typer.Option(
        "--judge",
        help="Which judge's scores (a run rescored by several): model id, protocol, or "
        "MODEL:PROTOCOL:MODE. Default: the run's own.",
    ),
]


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    console = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    console.setLevel(level)
    logging.basicConfig(
        level=min(level, logging.INFO), format="%(message)s", handlers=[console], force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _log_to_run_folder(out: Path) -> logging.Handler:
    """Every INFO line of a run (retries, failures, pauses) also goes to RUN/editbench.log."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "editbench.log"
    if path.is_symlink():  # never append through a link in a run folder (issue 31, class 8)
        raise _fail(
            f"{path} is a symbolic link; editbench does not write through links in a "
            "run folder (remove it)",
            2,
        )
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(LogLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


# What a run folder holds once a job has been recorded (before that, a refused run left it).
_JOB_RECORDS = ("edits.jsonl", "scores.jsonl")


def _remove_if_unused(out: Path, handler: logging.Handler) -> None:
    """A run refused before its first job leaves no folder behind, if this invocation made it."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    if any((out / name).is_file() and (out / name).stat().st_size for name in _JOB_RECORDS):
        return
    shutil.rmtree(out, ignore_errors=True)


def _invocation() -> str:
    """How the user started editbench, to print commands that run as pasted: the console
    script by the path they ran (its bare name when that is what PATH finds), or python -m."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "editbench"
    if Path(argv0).name == "__main__.py":
        return shlex.join([sys.executable, "-m", "orchestrator"])
    name = Path(argv0).name
    found = shutil.which(name)
    if found and Path(found).resolve() == Path(argv0).resolve():
        return name
    return shlex.quote(argv0)


def _shown_path(path: Path) -> str:
    """A path as the user can open it. In a container, EDITBENCH_PATH_MAP=CONTAINER=HOST (the
    runs mount, e.g. /workspace/runs=/home/me/editbench/runs) turns the container's path into
    the host's."""
    resolved = path.resolve()
    inside, sep, host = os.environ.get("EDITBENCH_PATH_MAP", "").partition("=")
    if sep and inside and host:
        try:
            return str(Path(host) / resolved.relative_to(Path(inside)))
        except ValueError:
            pass
    return str(resolved)


def _replica_lines(out: Path) -> list[str]:
    """How many jobs each replica (endpoint) of a service did in this run, from provenance.json:
    ``editor replicas: http://10.0.1.5:8001 6 jobs, http://10.0.1.6:8001 6 jobs``."""
    services = RunStore(out).read_provenance().services
    lines = []
    for name, service in (("editor", services.editor), ("reward", services.reward)):
        if service is None or not service.endpoints:
            continue
        parts = []
        for e in service.endpoints:
            failed = e.jobs_failed
            extra = f" ({counted(failed, 'failed attempt')})" if failed else ""
            parts.append(f"{e.url} {counted(e.jobs_ok, 'job')}{extra}")
        lines.append(f"{name} replicas: " + ", ".join(parts))
    return lines


def _every_score_failed(summary: Summary, out: Path) -> str | None:
    """Why no item of the run got a score, when every score attempt failed; None otherwise."""
    micro = summary.overall.micro
    if micro.scored or not (micro.judge_failed or micro.unscored):
        return None
    reasons: Counter[str] = Counter()
    for record in JsonlLog(out / "results.jsonl").read():
        error = record.get("score_error")
        for question in record.get("questions") or []:
            error = error or question.get("error")
        if error:
            reasons[str(error)] += 1
    failed = micro.judge_failed + micro.unscored
    why = reasons.most_common(1)[0][0] if reasons else "see results.jsonl"
    return f"every score of this run failed ({failed} of {failed}); the judge said: {why}"


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _explained(exc: Exception) -> str:
    """A failure as printed: a service call that found no service of its kind at the URL says
    what to do about it."""
    hint = what_to_do(exc) if isinstance(exc, ServiceCallError) else ""
    return f"{exc}. {hint[0].upper()}{hint[1:]}" if hint else str(exc)


def _parse_size(size: str | None) -> dict[str, int]:
    if size is None or size == "auto":
        return {}
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise _fail("--size must be WIDTHxHEIGHT (multiples of 16), e.g. 512x512", 2)
    return {"width": int(width), "height": int(height)}


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def given_settings(ctx: typer.Context) -> dict[str, Any]:
    """The RunSettings fields given on the command line, by name: a command's parameters are
    named as the fields they set, so nothing is copied by hand and a flag left out (or at its
    default) never hides a config file or EDITBENCH_* value."""
    return {
        name: value
        for name, value in ctx.params.items()
        if name in RunSettings.model_fields and _from_command_line(ctx, name)
    }


def _settings(cli: dict[str, Any], config: Path | None, out: Path | None = None) -> RunSettings:
    given = {k: v for k, v in cli.items() if v is not None}
    try:
        saved = read_saved_identity(out) if out is not None else None
        return resolve_settings(given, environ=os.environ, config_file=config, saved_identity=saved)
    except (ConfigError, BenchmarkError) as exc:
        raise _fail(str(exc), 2) from None


def _print_line(line: str) -> None:
    """A progress line for a log: plain text on stderr, flushed at once."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _print_cost(summary: Summary) -> None:
    from orchestrator.report.cost import cost_line

    line = cost_line(summary.judge_cost)
    if line:
        out_console.print(line, highlight=False, soft_wrap=True)


def _title(summary: Summary, out: Path) -> str:
    name = ((summary.run or {}).get("benchmark") or {}).get("name")
    return f"{name} · {out}" if name else f"editbench · {out}"


@app.command()
def run(
    ctx: typer.Context,
    benchmark: Annotated[
        str | None,
        typer.Option(
            "--benchmark",
            "-b",
            help="Manifest (.jsonl/.csv/.yaml), folder, GEdit-Bench parquet or "
            "save_to_disk folder, or 'sample'. Optional with --resume.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/NAME-TIME).")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Split of a DatasetDict folder (save_to_disk; default train) or of a hub "
            "parquet dataset (data/<split>-*.parquet; default test, else train).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out with its saved settings.")
    ] = False,
    phase: Annotated[
        str | None, typer.Option("--phase", help="edit, score or all (default: all).")
    ] = None,
    edited_dir: Annotated[
        Path | None,
        typer.Option(
            "--edited-dir",
            help="Score-only: edited images made elsewhere, named <item id>.png/.jpg/.webp.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    categories: Annotated[
        list[str] | None,
        typer.Option(
            "--categories",
            "--category",
            "-c",
            help="Only these categories (repeat, or comma-separated), e.g. 物理.",
        ),
    ] = None,
    languages: Annotated[
        list[str] | None, typer.Option("--language", help="Only these instruction languages.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most N items.")] = None,
    limit_per_category: Annotated[
        int | None, typer.Option("--limit-per-category", help="At most N items per category.")
    ] = None,
    editor_url: EditorUrlOpt = None,
    reward_url: RewardUrlOpt = None,
    editor_api: Annotated[
        str | None,
        typer.Option(
            "--editor-api",
            help="What --editor-url speaks: editbench (our editor service, default) or openai "
            "(any OpenAI-compatible images-edit endpoint; URL ends in /v1) "
            "(env EDITBENCH_EDITOR_API).",
        ),
    ] = None,
    editor_model: Annotated[
        str | None,
        typer.Option(
            "--editor-model",
            help="--editor-api openai: the model to ask for (default: the endpoint's first "
            "in /v1/models).",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Inference steps (default: the editor family's, e.g. 50)."),
    ] = None,
    cfg: Annotated[
        float | None,
        typer.Option("--cfg", help="True CFG scale, for families that take it (Qwen: 4.0)."),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="An editor family's own parameter, NAME=VALUE (repeat), e.g. "
            "guidance_scale=2.5; the editor's /v1/info lists them.",
        ),
    ] = None,
    negative_prompt: Annotated[
        str | None,
        typer.Option("--negative-prompt", help="What the edit should avoid (' ': none)."),
    ] = None,
    seed_policy: Annotated[
        str | None, typer.Option("--seed-policy", help="per-item (default), fixed or random.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Base seed (42).")] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="Output WIDTHxHEIGHT (auto: ~1 MP).")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Judge protocol (viescore).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="Judge mode: expected (default) or generate.")
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens", help="Longest judge answer in --mode generate, in tokens (512)."
        ),
    ] = None,
    edit_concurrency: Annotated[
        int | None,
        typer.Option("--edit-concurrency", help="Edits in flight (2 per editor worker)."),
    ] = None,
    score_concurrency: Annotated[
        int | None,
        typer.Option(
            "--score-concurrency",
            help="Judge requests in flight (default: what the judge's /v1/info says keeps it "
            "busy).",
        ),
    ] = None,
    items_per_request: Annotated[
        int | None, typer.Option("--items-per-request", help="Items per judge request (4).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also redo jobs that failed permanently.")
    ] = False,
    job_deadline_s: Annotated[
        float | None,
        typer.Option(
            "--job-deadline-s",
            help="Give a job up after this long, retries included (1800: long enough to "
            "survive a service restart).",
        ),
    ] = None,
    request_timeout_s: Annotated[
        float | None,
        typer.Option("--request-timeout-s", help="Wait this long for one answer (900)."),
    ] = None,
    ready_timeout_s: Annotated[
        float | None, typer.Option("--ready-timeout-s", help="Wait this long for /ready (600).")
    ] = None,
    share_gpu: Annotated[
        bool,
        typer.Option(
            "--share-gpu",
            help="Editor and judge share one GPU: before each phase the other service releases "
            "its model and this one loads; each hand-over is timed (env EDITBENCH_SHARE_GPU).",
        ),
    ] = False,
    allow_outside_paths: Annotated[
        bool,
        typer.Option(
            "--allow-outside-paths",
            help="Read benchmark images outside the benchmark's folder (absolute paths, '..' "
            "or symlinks that lead out); refused by default.",
        ),
    ] = False,
    allow_mixed_revisions: Annotated[
        bool,
        typer.Option(
            "--allow-mixed-revisions",
            help="Use endpoints of one service that serve different model revisions (refused "
            "by default: results would mix models).",
        ),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 if any job failed or went unscored.")
    ] = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Run a benchmark: every edit, then every score, then the report. Resumable."""
    _setup_logging(verbose)
    if resume and out is None:
        raise _fail("--resume needs --out RUN_FOLDER", 2)
    if resume and not (out and (out / "run.json").is_file()):
        raise _fail(f"--resume: {out} is not a run folder (no run.json)", 2)
    settings = _settings({**given_settings(ctx), **_parse_size(size)}, config, out)
    if settings.out is None:
        settings = settings.model_copy(update={"out": default_out(settings.benchmark)})
    assert settings.out is not None
    made_folder = not settings.out.exists()
    log_handler = _log_to_run_folder(settings.out)
    progress: PhaseProgress = (
        RichProgress(err_console)
        if out_console.is_terminal and err_console.is_terminal
        else LineProgress(_print_line)
    )
    try:
        outcome = asyncio.run(run_benchmark(settings, progress))
    except KeyboardInterrupt:
        resume_command = f"{_invocation()} run --resume --out {shlex.quote(str(settings.out))}"
        err_console.print(
            f"\n[yellow]interrupted.[/] Finished jobs are saved; continue with:\n"
            f"  {escape(resume_command)}",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(130) from None
    except (BenchmarkError, ServiceNotReady, ServiceCallError, RunFolderBusy) as exc:
        if made_folder and not isinstance(exc, RunFolderBusy):
            _remove_if_unused(settings.out, log_handler)
        raise _fail(_explained(exc)) from None
    if outcome.summary is not None:
        for table in summary_tables(outcome.summary, title=_title(outcome.summary, outcome.out)):
            out_console.print(table)
        _print_cost(outcome.summary)
        for note in outcome.summary.warnings:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    for handover in outcome.handovers:
        out_console.print(handover.describe(), highlight=False, soft_wrap=True)
    if len(outcome.handovers) > 1:
        total = sum(h.wall_s for h in outcome.handovers)
        out_console.print(
            f"GPU hand-overs: {len(outcome.handovers)}, {total:.1f} s in all", highlight=False
        )
    for line in _replica_lines(outcome.out):
        out_console.print(line, highlight=False, soft_wrap=True)
    if outcome.report is not None:
        out_console.print(
            f"report: {_shown_path(outcome.report.html)}", highlight=False, soft_wrap=True
        )
    failed_all = (
        _every_score_failed(outcome.summary, outcome.out) if outcome.summary is not None else None
    )
    if failed_all is not None:
        raise _fail(failed_all)
    if strict and outcome.summary is not None:
        micro = outcome.summary.overall.micro
        if micro.edit_failed or micro.judge_failed or micro.unscored:
            raise typer.Exit(1)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.", exists=True, file_okay=False)],
    self_contained: Annotated[
        bool,
        typer.Option(
            "--self-contained",
            help="Thumbnails inside report.html: one file to mail or attach to a supplement.",
        ),
    ] = False,
    judge: JudgeOpt = None,
) -> None:
    """Re-render a run folder's summary.json, results and report.html from its records."""
    try:
        paths, summary = rerender_report(run_dir, self_contained=self_contained, judge=judge)
    except JudgeNotFound as exc:
        raise _fail(str(exc), 2) from None
    except (BenchmarkError, RunFolderBusy) as exc:
        raise _fail(str(exc)) from None
    for table in summary_tables(summary, title=_title(summary, run_dir)):
        out_console.print(table)
    _print_cost(summary)
    out_console.print(f"report: {_shown_path(paths.html)}", highlight=False, soft_wrap=True)


@app.command()
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders; the first is the baseline.", exists=True, file_okay=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where compare.json/.html go (runs/compare-TIME)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="The metric the tables show (default: the headline)."),
    ] = None,
    judge: JudgeOpt = None,
    allow_different_judges: Annotated[
        bool,
        typer.Option(
            "--allow-different-judges",
            help="Compare runs judged by different models or protocols anyway.",
        ),
    ] = False,
) -> None:
    """Runs side by side per group: paired differences on shared items, t 95% CIs, Holm."""
    from orchestrator.compare import CompareError, compare_runs, load_run, write_compare
    from orchestrator.report.compare_view import compare_tables, metrics_table, verdict_lines

    try:
        loaded = [load_run(path, judge=judge) for path in runs]
        labels = [run.label for run in loaded]
        for index, run in enumerate(loaded):  # two folders of one name: tell them apart
            if labels.count(run.label) > 1:
                run.label = f"{run.label}#{index + 1}"
        result = compare_runs(
            loaded,
            metric=metric,
            allow_different_judges=allow_different_judges,
        )
    except (CompareError, JudgeNotFound) as exc:
        raise _fail(str(exc), 2) from None
    target = out or default_out("compare")
    json_path, html_path = write_compare(result, target)
    for table in compare_tables(result):
        out_console.print(table)
    if len(result.metrics) > 1:
        out_console.print(metrics_table(result))
    for line in verdict_lines(result):
        out_console.print(line, highlight=False, soft_wrap=True)
    for note in result.warnings:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    out_console.print(f"compare: {_shown_path(html_path)}", highlight=False, soft_wrap=True)
    out_console.print(f"data: {_shown_path(json_path)}", highlight=False, soft_wrap=True)


@app.command()
def rescore(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.", exists=True, file_okay=False)],
    reward_url: Annotated[
        str, typer.Option("--reward-url", help="The other judge (several: comma-separated).")
    ],
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Judge protocol (default: the run's).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="expected or generate (default: the run's).")
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens", min=8, help="Longest answer in --mode generate (the run's)."
        ),
    ] = None,
    items_per_request: Annotated[
        int, typer.Option("--items-per-request", min=1, max=64, help="Items per judge request.")
    ] = 4,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also redo jobs that failed permanently.")
    ] = False,
    ready_timeout_s: Annotated[
        float, typer.Option("--ready-timeout-s", help="Wait this long for the judge's /ready.")
    ] = 600.0,
    verbose: VerboseOpt = 0,
) -> None:
    """Score a run's edits with another judge or protocol, kept beside the run's own scores.
    Resumable: finished jobs are skipped."""
    from orchestrator.rescore import RescoreRequest, rescore_run

    _setup_logging(verbose)
    if mode is not None and mode not in ("expected", "generate"):
        raise _fail("--mode must be expected or generate", 2)
    request = RescoreRequest(
        run=run_dir,
        reward_url=reward_url,
        protocol=protocol,
        mode=mode,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        items_per_request=items_per_request,
        reward_api_key=os.environ.get("EDITBENCH_REWARD_API_KEY"),
        retry_failed=retry_failed,
        ready_timeout_s=ready_timeout_s,
    )
    progress: PhaseProgress = (
        RichProgress(err_console)
        if out_console.is_terminal and err_console.is_terminal
        else LineProgress(_print_line)
    )
    try:
        outcome = asyncio.run(rescore_run(request, progress))
    except KeyboardInterrupt:
        err_console.print(
            f"\n[yellow]interrupted.[/] Finished jobs are saved; continue with the same "
            f"command: editbench rescore {run_dir} --reward-url {reward_url}",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except (BenchmarkError, ServiceNotReady, ServiceCallError, RunFolderBusy) as exc:
        raise _fail(_explained(exc)) from None
    counts = outcome.counts
    out_console.print(
        f"rescore: {counts.ok} scored, {counts.skipped} already done, {counts.failed} failed, "
        f"{counts.unscored} unscored",
        highlight=False,
    )
    if outcome.judge is None or outcome.summary is None or outcome.report is None:
        raise _fail("nothing was scored: no report for this judge")
    for table in summary_tables(outcome.summary, title=f"{run_dir.name} · {outcome.judge.label}"):
        out_console.print(table)
    _print_cost(outcome.summary)
    out_console.print(f"judge: {outcome.judge.label}", highlight=False, soft_wrap=True)
    out_console.print(f"report: {outcome.report.html.resolve()}", highlight=False, soft_wrap=True)


@app.command()
def agreement(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.", exists=True, file_okay=False)],
    judges: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--judges",
            help="The two judges (or protocols) to compare, A then B (default: the run's own "
            "and the first rescore).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where agreement.json/.html go (RUN).")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="A metric of the protocol (default: its headline)."),
    ] = None,
    resamples: Annotated[
        int, typer.Option("--resamples", min=200, help="Bootstrap resamples (BCa).")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
) -> None:
    """How far two judges agree on one run's edits: rank correlations, pairwise agreement and
    the mean offset, per category and overall, with 95% intervals."""
    from orchestrator.agreement import AgreementError, run_agreement, write_agreement
    from orchestrator.report.agreement_view import agreement_table

    try:
        result = run_agreement(
            run_dir, judges=judges, metric=metric, resamples=resamples, seed=seed
        )
    except AgreementError as exc:
        raise _fail(str(exc), 2) from None
    json_path, html_path = write_agreement(result, out or run_dir)
    out_console.print(agreement_table(result))
    out_console.print(f"agreement: {html_path.resolve()}", highlight=False, soft_wrap=True)
    out_console.print(f"data: {json_path.resolve()}", highlight=False, soft_wrap=True)


@app.command()
def leaderboard(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders, one per model.", exists=True, file_okay=False),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where leaderboard.json/.csv/.html go."),
    ] = None,
    judge: JudgeOpt = None,
    compare_judge: Annotated[
        str | None,
        typer.Option("--compare-judge", help="A second judge: do both rank the runs alike?"),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="A metric of the protocol (default: its headline)."),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option("--table", help="Which declared table ranks (default the first, e.g. en)."),
    ] = None,
    allow_different_benchmarks: Annotated[
        bool, typer.Option("--allow-different-benchmarks", help="Rank runs of other benchmarks.")
    ] = False,
    allow_different_judges: Annotated[
        bool,
        typer.Option("--allow-different-judges", help="Rank runs judged otherwise anyway."),
    ] = False,
    resamples: Annotated[
        int,
        typer.Option("--resamples", min=200, help="Bootstrap resamples (BCa, for Kendall tau)."),
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
) -> None:
    """Rank runs of different editors on one benchmark: headline with its interval, paired
    differences between neighbours, a rank range per run, per-category columns."""
    from orchestrator.leaderboard import LeaderboardError, build_leaderboard, write_leaderboard
    from orchestrator.report.leaderboard_view import leaderboard_table

    target = out or default_out("leaderboard")
    try:
        result = build_leaderboard(
            runs,
            out=target,
            judge=judge,
            compare_judge=compare_judge,
            metric=metric,
            table=table,
            allow_different_benchmarks=allow_different_benchmarks,
            allow_different_judges=allow_different_judges,
            resamples=resamples,
            seed=seed,
        )
    except LeaderboardError as exc:
        raise _fail(str(exc), 2) from None
    json_path, _, html_path = write_leaderboard(result, target)
    out_console.print(leaderboard_table(result))
    for note in result["warnings"]:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    tau = (result.get("compare_judge") or {}).get("kendall_tau_b")
    if tau is not None:
        out_console.print(
            f"Kendall tau-b between the rankings of the two judges: {tau:.2f}", highlight=False
        )
    out_console.print(f"leaderboard: {html_path.resolve()}", highlight=False, soft_wrap=True)
    out_console.print(f"data: {json_path.resolve()}", highlight=False, soft_wrap=True)


@app.command()
def edit(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Image to edit.")],
    instruction: Annotated[str, typer.Argument(help='The edit, e.g. "make the sky red".')],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the edit.")],
    more: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            exists=True,
            dir_okay=False,
            help="A further input image, after SOURCE (repeat, in order): for an editor that "
            "takes several (Qwen-Image-Edit-2509: 3; /v1/info family.max_images).",
        ),
    ] = None,
    editor_url: EditorUrlOpt = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Inference steps (the family's default).")
    ] = None,
    cfg: Annotated[
        float | None, typer.Option("--cfg", help="True CFG scale (the family's default).")
    ] = None,
    params: Annotated[
        list[str] | None, typer.Option("--param", help="A family parameter, NAME=VALUE.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Seed, to make the same edit again (default: random; printed after)."
        ),
    ] = None,
    size: Annotated[str | None, typer.Option("--size", help="WIDTHxHEIGHT (auto).")] = None,
    negative_prompt: Annotated[
        str | None,
        typer.Option("--negative-prompt", help="What the edit should avoid (' ': none)."),
    ] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Edit one image with one instruction."""
    _setup_logging(verbose)
    # A single edit: a given seed is used as it is, else the editor picks one.
    policy = "fixed" if seed is not None else "random"
    cli = {**given_settings(ctx), "seed_policy": policy, **_parse_size(size)}
    settings = _settings(cli, config)
    try:
        request = settings.edit_settings().request(
            "single", source.read_bytes(), instruction, [path.read_bytes() for path in more or []]
        )
    except ValidationError as exc:
        raise _fail(_invalid(exc)) from None

    async def call() -> Any:
        async with make_http_client() as http:
            return await EditorClient(http, first_url(settings.editor_url)).edit(request)

    try:
        response = asyncio.run(call())
    except ServiceCallError as exc:
        raise _fail(_explained(exc)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(response.image)
    out_console.print(
        f"{output} ({response.width}x{response.height}) seed {response.seed}, "
        f"{response.timings.total_s:.1f} s, {response.model.id} on {response.device}",
        highlight=False,
    )
    if not response.model.meaningful:
        err_console.print("[yellow]note:[/] a random-weight model made this edit: it means nothing")


def _single_score_request(
    settings: RunSettings,
    source: Path,
    edited: Path,
    instruction: str,
    category: str | None,
    hints: str | None,
    inputs: list[Path] | None,
    reference: Path | None,
    variant: str | None,
) -> ScoreRequest:
    """The request of ``editbench score``: one item, its images read from the given files."""
    return ScoreRequest(
        items=[
            ScoreItem(
                id="single",
                source_image=source.read_bytes(),
                edited_image=edited.read_bytes(),
                instruction=instruction,
                category=category,
                hints=hints,
                input_images=[path.read_bytes() for path in inputs or []],
                reference_image=reference.read_bytes() if reference is not None else None,
                variant=variant,
            )
        ],
        protocol=settings.protocol,
        mode=settings.mode,
        max_new_tokens=settings.max_new_tokens,
    )


def _invalid(exc: ValidationError) -> str:
    """A request the wire schema refuses, in one line naming the field."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


@app.command()
def score(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The image before the edit.")
    ],
    edited: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The image after the edit.")
    ],
    instruction: Annotated[str, typer.Argument(help="The instruction the edit followed.")],
    reward_url: RewardUrlOpt = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Judge protocol (viescore).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="expected (default) or generate.")
    ] = None,
    category: Annotated[
        str | None,
        typer.Option("--category", help="The edit's category, for protocols that ask by it."),
    ] = None,
    hints: Annotated[
        str | None,
        typer.Option("--hints", help="Extra facts for the judge (a benchmark item's hints)."),
    ] = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input",
            exists=True,
            dir_okay=False,
            help="A further input image of the edit, after SOURCE (repeat, in order): shown "
            "where the protocol's questions name input_2, input_3, ...",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            exists=True,
            dir_okay=False,
            help="A reference (ground-truth) image, for protocols whose questions show one.",
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant", help="Which variant of the protocol's questions to ask (e.g. frame_2)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ItemScore as JSON.")] = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Judge one edit: SC, PQ and overall, with each question's score."""
    _setup_logging(verbose)
    settings = _settings(given_settings(ctx), config)
    try:
        request = _single_score_request(
            settings, source, edited, instruction, category, hints, inputs, reference, variant
        )
    except ValidationError as exc:
        raise _fail(_invalid(exc)) from None

    async def call() -> Any:
        async with make_http_client() as http:
            return await RewardClient(http, first_url(settings.reward_url)).score(request)

    try:
        response = asyncio.run(call())
    except ServiceCallError as exc:
        raise _fail(_explained(exc)) from None
    result = response.results[0]
    if as_json:
        out_console.print_json(result.model_dump_json())
        return
    table = Table(
        title=f"{result.protocol} ({result.mode}) · judge {response.model.id}", title_justify="left"
    )
    table.add_column("question")
    table.add_column("score", justify="right")
    for q in result.questions:
        table.add_row(q.name, "unscored" if q.score is None else f"{q.score:.2f}")
    for name, value in answer_values(result).items():
        table.add_row(f"[bold]{escape(name)}", "-" if value is None else f"[bold]{value:.2f}")
    out_console.print(table)
    if not response.model.meaningful:
        err_console.print(
            "[yellow]note:[/] a random-weight judge gave this score: it means nothing"
        )


@app.command()
def status(
    ctx: typer.Context,
    editor_url: EditorUrlOpt = None,
    reward_url: RewardUrlOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print both services' state as JSON.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Readiness and info of both services. Exits 1 unless both are ready."""
    settings = _settings(given_settings(ctx), config)

    async def probe() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with make_http_client() as http:
            # Several endpoints: their readiness and capacity added up (mixed models shown).
            clients = (
                await open_editor(http, settings.editor_url, allow_mixed_revisions=True),
                await open_reward(http, settings.reward_url, allow_mixed_revisions=True),
            )
            for client in clients:
                entry: dict[str, Any] = {"url": client.base_url}
                try:
                    entry["ready"] = (await client.ready()).model_dump(mode="json")
                except ServiceCallError as exc:
                    entry["ready"] = None
                    entry["error"] = exc.message
                try:
                    entry["info"] = (await client.info()).model_dump(mode="json")
                except ServiceCallError as exc:
                    # Ready, but not this service (the other one, another server): not usable.
                    entry["ready"] = None
                    entry.setdefault("error", exc.message)
                found[client.service] = entry
                if (records := endpoint_records(client)) is not None:
                    entry.update(records)
            await close_clients(clients)
        return found

    found = asyncio.run(probe())
    if as_json:
        out_console.print_json(json.dumps(found))
    else:
        table = Table(title="editbench services", title_justify="left")
        longest = max(len(entry["url"]) for entry in found.values())
        for column in ("service", "url", "ready", "model", "capacity"):
            if column == "url":  # whole, to copy: the other columns wrap instead
                table.add_column(column, no_wrap=True, min_width=longest)
            else:
                table.add_column(column)
        for name, entry in found.items():
            info = entry.get("info") or {}
            model = info.get("model") or {}
            capacity = (
                f"{len(info.get('workers', []))} workers, max_in_flight {info.get('max_in_flight')}"
                if name == "editor" and info
                else f"{len(info.get('devices', []))} replicas, batch "
                f"{info.get('max_batch_images')} images, queue {info.get('queue_capacity')} items"
                if info
                else "-"
            )
            ready = (
                "[green]ready[/]"
                if entry["ready"]
                else f"[red]not ready[/] {escape(entry.get('error', ''))}"
            )
            label = f"{model.get('id')}@{model.get('revision')}" if model else "-"
            if model and not model.get("meaningful", True):
                label += " [yellow](random weights)[/]"
            table.add_row(name, entry["url"], ready, label, capacity)
        out_console.print(table)
        # Below the table, whole (a narrow terminal wraps cells): the judge's protocols, a list
        # that grows with every benchmark, and which services run random-weight models.
        protocols = (found.get("reward", {}).get("info") or {}).get("protocols") or []
        if protocols:
            out_console.print(f"judge protocols: {escape(', '.join(protocols))}", highlight=False)
        toys = [
            name
            for name, entry in found.items()
            if not ((entry.get("info") or {}).get("model") or {}).get("meaningful", True)
        ]
        if toys:
            out_console.print(
                f"[yellow]note:[/] {' and '.join(toys)} run random weights: scores mean nothing",
                highlight=False,
            )
    if not all(entry["ready"] for entry in found.values()):
        raise typer.Exit(1)


@app.command()
def sample(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the sample benchmark into.")],
) -> None:
    """Write the sample benchmark (3 categories x 4 items, drawn images) into a folder."""
    manifest = write_sample(out_dir)
    out_console.print(f"sample benchmark: {manifest}", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def demo(ctx: typer.Context) -> None:
    """Start both services on tiny models, run the sample benchmark into runs/demo, stop them.

    Options are passed on to ``python -m orchestrator.demo`` (--out, --steps, --size,
    --per-category, --cache-dir)."""
    from orchestrator.demo import main as demo_main

    raise typer.Exit(demo_main(list(ctx.args)))


@app.command()
def version() -> None:
    """Print editbench's version."""
    out_console.print(__version__)


def _metavar(param: Any, ctx: Any) -> str:
    """What help shows after a parameter: nothing after a flag (never ``--resume <bool>``), a
    name for a value (URL, N, SECONDS, FILE, FOLDER, or the option's own name), an argument's own
    name in capitals."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    name = (param.name or "value").upper()
    if param.param_type_name == "argument":
        return name  # typer adds the "..." of a repeated one
    shown = param.display_type(ctx)  # typer's own: <int>, <file>, <dir>, <path>, <str>, ...
    if name.endswith("_URL"):
        return "URL"
    if name.endswith("_S"):
        return "SECONDS"
    named = {"<int>": "N", "<file>": "FILE", "<dir>": "FOLDER", "<path>": "PATH"}
    if shown in named:
        return named[shown]
    if shown.startswith("<list"):  # a repeatable option names one value
        return name[:-3] + "Y" if name.endswith("IES") else name.removesuffix("S")
    return name


def _named_values(params: list[Any], ctx: Any) -> list[Any]:
    """``params`` with a value name on each that has none (instead of its Python type)."""
    for param in params:
        if param.metavar is None:
            param.metavar = _metavar(param, ctx)
    return params


class _HelpCommand(typer.core.TyperCommand):
    """A command whose help names values instead of showing their Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _named_values(super().get_params(ctx), ctx)


class _HelpGroup(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _named_values(super().get_params(ctx), ctx)


def _show_version(value: bool) -> None:
    if value:
        out_console.print(f"editbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print editbench's version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Benchmark instruction-based image editing: edit with the editor service, judge with the
    reward service, report per category."""


app.info.cls = _HelpGroup
for _command in app.registered_commands:  # every command, those added later in this file too
    if _command.cls in (None, typer.core.TyperCommand):
        _command.cls = _HelpCommand
