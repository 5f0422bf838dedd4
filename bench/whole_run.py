"""A whole benchmark run on one GPU, timed: ``editbench run --share-gpu`` with both services.

The workload the replaced system documents (270 images in 22 minutes on one GPU: 8 editing,
9 scoring, 4.5 switching models), in its shape: 1024x1024 sources and edits, 8 steps without CFG,
the viescore protocol, both models on the one GPU taking turns. Both services start released
(``*_LOAD_ON_START=false``) on random-full weights; the CLI hands the GPU over before each phase.
Per-phase wall time comes from the run's own records (the hand-overs in provenance.json, each
job's ``finished_at``); the projection to 270 items scales the two phases by items and keeps the
hand-overs and the CLI's fixed costs as they are.

    # H200, ~6 min: 54 items (use --items 108 if the time allows)
    python bench/whole_run.py --items 54 --out whole-run.json
    # CPU smoke test of the same path on the tiny models:
    python bench/whole_run.py --model tiny --items 3 --side 64 --steps 2 --devices cpu \
        --out smoke.json

Writes --out (JSON record) and prints a table beside the seed's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SEED = {"items": 270, "total_min": 22.0, "edit_min": 8.0, "score_min": 9.0, "switch_min": 4.5}
TARGET_MIN = 15.0
CATEGORIES = ["color", "style", "removal", "addition", "text", "background"]
INSTRUCTIONS = [
    "make the sky red",
    "turn the photo into a watercolor painting",
    "remove the person on the left",
    "add snow on the roof",
    "write the word OPEN on the sign",
    "replace the background with a quiet beach at sunset",
]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_benchmark(folder: Path, items: int, side: int) -> Path:
    """``items`` distinct sources (gradients and noise, PNG) in a JSONL manifest."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    lines = []
    for i in range(items):
        base = np.stack([(x + 7 * i) % 256, (y * (i + 1)) % 256, (x * y + 31 * i) % 256], -1)
        pixels = np.clip(base + rng.integers(0, 40, (side, side, 3)), 0, 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        name = f"images/item-{i:04d}.png"
        (folder / name).write_bytes(buffer.getvalue())
        category = CATEGORIES[i % len(CATEGORIES)]
        lines.append(
            json.dumps(
                {
                    "id": f"{category}-{i:04d}",
                    "category": category,
                    "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
                    "image": name,
                    "language": "en",
                }
            )
        )
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@contextlib.contextmanager
def service(
    module: str, env: dict[str, str], port: int, log: Path, timeout_s: float
) -> Iterator[str]:
    """A real service process; yields its URL once its workers are up with the model released."""
    import httpx

    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port), "--log-level", "info"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{module} exited ({process.returncode}); see {log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not answer in {timeout_s:.0f} s; see {log}")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    answer = httpx.get(f"{url}/ready", timeout=2)
                    if answer.status_code == 200 or (
                        "released" in answer.json()["error"]["message"].lower()
                    ):
                        break  # workers up, model released (or loaded): the CLI takes over
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def phases(run: Path, started: float, finished: float) -> dict[str, Any]:
    """Per-phase wall time from the run folder's records."""
    from orchestrator.store import RunStore  # the run's own reader of provenance.json

    handovers = [h.dump() for h in RunStore(run).read_provenance().handovers]
    edits = read_jsonl(run / "edits.jsonl")
    scores = read_jsonl(run / "scores.jsonl")
    to_editor = [h for h in handovers if h["to"] == "editor"]
    to_reward = [h for h in handovers if h["to"] == "reward"]
    edit_start = stamp(to_editor[0]["finished_at"]) if to_editor else started
    edit_end = max(stamp(e["finished_at"]) for e in edits)
    score_start = stamp(to_reward[0]["finished_at"]) if to_reward else edit_end
    score_end = max(stamp(s["finished_at"]) for s in scores)
    handover_s = sum(h["wall_s"] for h in handovers)
    edit_s, score_s = edit_end - edit_start, score_end - score_start
    total = finished - started
    return {
        "total_s": total,
        "edit_s": edit_s,
        "score_s": score_s,
        "handover_s": handover_s,
        "other_s": total - edit_s - score_s - handover_s,  # CLI start, planning, report
        "handovers": handovers,
        "edits_ok": sum(1 for e in edits if e["status"] == "ok"),
        "scores_ok": sum(1 for s in scores if s["status"] == "ok"),
        "edit_s_per_item": edit_s / max(1, len(edits)),
        "score_items_per_s": len(scores) / score_s if score_s > 0 else None,
        "edit_pipeline_s": [
            e["response"]["timings"]["pipeline_s"] for e in edits if "response" in e
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="random-full", help="both services' model source")
    parser.add_argument("--items", type=int, default=54)
    parser.add_argument("--side", type=int, default=1024, help="source and edit side")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=1.0)
    parser.add_argument("--protocol", default="viescore")
    parser.add_argument("--devices", default="", help="both services' devices (default: the GPU)")
    parser.add_argument("--no-compile", action="store_true", help="the editor runs eagerly")
    parser.add_argument(
        "--editor-env", nargs="*", default=[], help="extra EDITOR_*=VALUE (e.g. a faster mode)"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editbench")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/editbench-whole-run"),
        help="benchmark, run folder (edited images: keep it off $OUT) and service logs",
    )
    parser.add_argument("--out", type=Path, default=Path("whole_run.json"))
    parser.add_argument("--start-timeout-s", type=float, default=300)
    args = parser.parse_args()

    work = args.work_dir.resolve()
    manifest = write_benchmark(work / "benchmark", args.items, args.side)
    run = work / f"run-{int(time.time())}"
    common = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    editor_env = {
        **common,
        "EDITOR_MODEL": args.model,
        "EDITOR_CACHE_DIR": str(args.cache_dir),
        "EDITOR_LOAD_ON_START": "false",
        "EDITOR_DEVICES": args.devices,
        # Compile is the editor's own default on CUDA devices.
        **({"EDITOR_COMPILE": "false"} if args.no_compile else {}),
        **dict(kv.split("=", 1) for kv in args.editor_env),
    }
    reward_env = {
        **common,
        "REWARD_MODEL": args.model,
        "REWARD_CACHE_DIR": str(args.cache_dir),
        "REWARD_LOAD_ON_START": "false",
        "REWARD_DEVICES": args.devices,
    }
    began = time.perf_counter()
    progress("starting both services, released")
    with (
        service(
            "editor_service", editor_env, 8741, work / "editor.log", args.start_timeout_s
        ) as editor,
        service(
            "reward_service", reward_env, 8742, work / "reward.log", args.start_timeout_s
        ) as reward,
    ):
        services_start_s = time.perf_counter() - began
        command = [
            sys.executable, "-m", "orchestrator", "run",
            "--benchmark", str(manifest), "--out", str(run),
            "--editor-url", editor, "--reward-url", reward,
            "--steps", str(args.steps), "--cfg", str(args.cfg),
            "--size", f"{args.side}x{args.side}", "--protocol", args.protocol,
            "--share-gpu",
        ]  # fmt: skip
        progress(f"editbench run: {args.items} items, {args.steps} steps, {args.protocol}")
        started = time.time()
        cli = subprocess.run(command, cwd=REPO, env={**os.environ, **common})
        finished = time.time()
    if cli.returncode != 0:
        raise SystemExit(f"editbench run exited {cli.returncode}")
    figures = phases(run, started, finished)
    scale = SEED["items"] / args.items
    projected = {
        "edit_min": figures["edit_s"] * scale / 60,
        "score_min": figures["score_s"] * scale / 60,
        "switch_min": figures["handover_s"] / 60,  # two hand-overs, whatever the item count
        "other_min": figures["other_s"] / 60,
    }
    projected["total_min"] = sum(projected.values())
    record = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "run_folder": str(run),
        "services_start_s": services_start_s,
        **figures,
        "projection_270": projected,
        "seed": SEED,
        "target_total_min": TARGET_MIN,
    }
    args.out.write_text(json.dumps(record, indent=1))
    rows = [
        ("editing", figures["edit_s"], projected["edit_min"], SEED["edit_min"]),
        ("scoring", figures["score_s"], projected["score_min"], SEED["score_min"]),
        ("switching models", figures["handover_s"], projected["switch_min"], SEED["switch_min"]),
        ("CLI start, report", figures["other_s"], projected["other_min"], None),
        ("total", figures["total_s"], projected["total_min"], SEED["total_min"]),
    ]
    print(
        f"\n{args.items} items measured: {figures['edits_ok']} edits and "
        f"{figures['scores_ok']} scores ok"
    )
    print(f"{'phase':<20}{'measured s':>12}{'270 items, min':>16}{'seed, min':>11}")
    for name, seconds, minutes, seed in rows:
        seed_text = "-" if seed is None else f"{seed:.1f}"
        print(f"{name:<20}{seconds:>12.1f}{minutes:>16.2f}{seed_text:>11}")
    for h in figures["handovers"]:
        print(
            f"hand-over to {h['to']}: release {h['release_s'] or '-'} s, "
            f"load {h['load_s'] or '-'} s, {h['wall_s']} s in all"
        )
    verdict = "met" if projected["total_min"] <= TARGET_MIN else "missed"
    print(f"projection {projected['total_min']:.1f} min; target <= {TARGET_MIN:.0f} min: {verdict}")


if __name__ == "__main__":
    main()
