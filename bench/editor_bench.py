"""Editor benchmark: the same edits in-process and through the service, in one run.

    # H100, full-size random weights (timing does not depend on weight values), in two parts
    # that each fit a 10-minute window:
    python bench/editor_bench.py --part in-process --out editor-inprocess.json
    python bench/editor_bench.py --part service --compile --attention-backend _native_cudnn \
        --out editor-service.json
    # CPU smoke test of the same code path:
    python bench/editor_bench.py --model tiny --side 64 --steps 4 --fast-steps 2 --repeats 1

    # The modes, through the service, one start each (H200: ~7 min): 50-step true CFG, 8 and 4
    # steps without CFG, lossless then each faster mode, PSNR/SSIM against lossless, same seeds
    python bench/editor_bench.py --part modes --out editor-modes.json
    python bench/editor_bench.py --part modes --modes lossless cudnn flash eager --out lossless.json
    # CPU smoke test of the modes (FP8 is refused on the CPU and recorded as not measured):
    python bench/editor_bench.py --part modes --model tiny --side 64 --steps 4 --fast-steps 3 \
        --fewest-steps 2 --warmup-steps 2 --repeats 1 --modes lossless cache3 fp8-row

In-process, one pipeline is built and measured in stages: eager, per attention backend (transformer
forward alone, real shapes), the first-block step cache (speed and change in output), then regional
compilation. Then the service is started with the best settings and the same edits go through HTTP.
Every figure is printed as a JSON line and collected into --out; a table is printed last.
``--part modes`` (bench/editor_modes.py) starts the service once per mode instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import faulthandler
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from editor_modes import MODES, run_modes
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
INSTRUCTIONS = [
    "make the sky red",
    "replace the wooden table with a glass one and keep everything else unchanged",
    "add snow on the roof",
    "turn the photo into a watercolor painting with soft pastel colors",
    "remove the person on the left",
]
RESULTS: list[dict[str, Any]] = []
JOURNAL: list[Path] = []  # each record is appended here at once: a killed run keeps its figures


def record(**fields: Any) -> None:
    fields["t"] = round(time.time(), 1)
    RESULTS.append(fields)
    line = json.dumps(fields)
    print(line, flush=True)
    for path in JOURNAL:
        with path.open("a") as journal:
            journal.write(line + "\n")


def progress(message: str) -> None:
    """Where the run is, before each long step (stderr, unbuffered)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def source_png(side: int) -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * 255 // side, y * 255 // side, (x * y) % 256], -1)
    pixels = np.clip(base + rng.integers(0, 30, (side, side, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def psnr(a: bytes, b: bytes) -> float:
    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.float64)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class InProcess:
    """One DiffusersEditBackend, as a worker holds it, measured stage by stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from editor_service.backends.base import BackendSpec
        from editor_service.backends.diffusers_backend import DiffusersEditBackend

        self.torch = torch
        self.args = args
        self.device = "cuda:0" if torch.cuda.is_available() else "cpu"
        spec = BackendSpec("diffusers", args.model, None, "auto", str(args.cache_dir))
        self.backend = DiffusersEditBackend(spec)
        started = time.perf_counter()
        self.backend.load(self.device)
        record(
            stage="load",
            where="in-process",
            model=args.model,
            seconds=time.perf_counter() - started,
        )
        self.image = source_png(args.side)
        self.counter = 0

    def edit(self, steps: int, cfg: float, seed: int = 0) -> Any:
        """What an in-process script does: decode the source PNG, edit, encode a PNG."""
        from editor_service.backends.base import EditJob
        from editor_service.codecs import decode_to_rgb, encode_rgb

        self.counter += 1
        self.sync()
        started = time.perf_counter()
        pixels = decode_to_rgb(self.image, max_pixels=2**40)
        decoded = time.perf_counter()
        job = EditJob(
            job_id=f"{self.counter}-bench",
            image=pixels,
            instruction=INSTRUCTIONS[self.counter % len(INSTRUCTIONS)],
            negative_prompt=" ",
            num_inference_steps=steps,
            true_cfg_scale=cfg,
            seed=seed,
            width=self.args.side,
            height=self.args.side,
        )
        output = self.backend.edit(job, lambda: False)
        self.sync()
        edited = time.perf_counter()
        png = encode_rgb(output.image, "png", self.args.compress_level)
        self.last_png = png
        finished = time.perf_counter()
        self.last_codec_s = (decoded - started) + (finished - edited)
        return output, finished - started

    def timed_edits(
        self, name: str, steps: int, cfg: float, repeats: int, warm: bool = True
    ) -> list[float]:
        """``repeats`` timed edits, after one warm-up edit (recorded, flagged) when ``warm``."""
        times = []
        for i in range(repeats + int(warm)):
            output, seconds = self.edit(steps, cfg)
            warm_up = warm and i == 0
            record(
                stage=name,
                where="in-process",
                steps=steps,
                cfg=cfg,
                with_files_s=seconds,
                pipeline_s=output.pipeline_s,
                png_codecs_s=self.last_codec_s,
                peak_gib=self.peak_gib(),
                warm_up=warm_up,
            )
            if not warm_up:
                times.append(output.pipeline_s)
        return times

    def sync(self) -> None:
        if self.device != "cpu":
            self.torch.cuda.synchronize()

    def peak_gib(self) -> float | None:
        if self.device == "cpu":
            return None
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2)

    @contextlib.contextmanager
    def captured_forward(self) -> Iterator[dict[str, Any]]:
        """Capture the transformer's inputs from a real edit, for forward-only timing."""
        captured: dict[str, Any] = {}
        transformer = self.backend.pipe.transformer

        def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
            if not captured:
                captured.update(kwargs)

        handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    def time_forward(self, inputs: dict[str, Any], repeats: int) -> float:
        transformer = self.backend.pipe.transformer
        with self.torch.inference_mode():
            transformer(**inputs)
            self.sync()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                transformer(**inputs)
                self.sync()
                times.append(time.perf_counter() - started)
        return statistics.median(times)


def run_in_process(args: argparse.Namespace) -> dict[str, Any]:
    bench = InProcess(args)
    best: dict[str, Any] = {"attention_backend": None}

    bench.timed_edits("eager", args.fast_steps, 1.0, args.repeats)
    eager_full = bench.timed_edits("eager", args.steps, 4.0, 1, warm=False)  # shapes are warm

    # Attention backends, compared on the transformer forward alone (one CFG branch).
    with bench.captured_forward() as inputs:
        bench.edit(2, 1.0)
    if bench.device != "cpu":
        forward = {}
        for backend in args.attention_backends:
            try:
                bench.backend.pipe.transformer.set_attention_backend(backend)
                forward[backend] = bench.time_forward(inputs, args.forward_repeats)
            except Exception as exc:
                record(stage="attention", backend=backend, error=f"{type(exc).__name__}: {exc}")
                continue
            record(
                stage="attention", where="in-process", backend=backend, forward_s=forward[backend]
            )
        if forward:
            best["attention_backend"] = min(forward, key=lambda k: forward[k])
            bench.backend.pipe.transformer.set_attention_backend(best["attention_backend"])

    if bench.device != "cpu":
        started = time.perf_counter()
        bench.backend.pipe.transformer.compile_repeated_blocks(fullgraph=True)
        bench.backend._warm_up()
        record(stage="compile", where="in-process", warmup_s=time.perf_counter() - started)
        record(
            stage="attention",
            where="in-process",
            backend=f"{best['attention_backend']}+compile",
            forward_s=bench.time_forward(inputs, args.forward_repeats),
        )
        best["compile"] = True
    fast = bench.timed_edits("tuned", args.fast_steps, 1.0, args.repeats)
    full = bench.timed_edits("tuned", args.steps, 4.0, max(1, args.repeats - 1), warm=False)
    record(stage="memory", where="in-process", peak_gib=bench.peak_gib())
    summary = {
        "eager_full_s": statistics.median(eager_full),
        "tuned_fast_s": statistics.median(fast),
        "tuned_full_s": statistics.median(full),
        **best,
    }
    del bench
    return summary


def run_step_cache(args: argparse.Namespace) -> dict[str, Any]:
    """First-block cache: speed-up and how far the output moves, same seed and inputs.

    The skip decision depends on how much the first block's residual changes between steps, so
    with random weights the thresholds that suit a trained model (~0.05-0.1) may never skip.
    """
    from diffusers.hooks import FirstBlockCacheConfig

    bench = InProcess(args)
    bench.edit(args.fast_steps, 4.0)  # warm-up
    plain, _ = bench.edit(args.steps, 4.0, seed=1)
    plain_png = bench.last_png
    speedups = {}
    for threshold in args.step_cache:
        bench.backend.pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        cached, _ = bench.edit(args.steps, 4.0, seed=1)
        bench.backend.pipe.transformer.disable_cache()
        speedups[threshold] = plain.pipeline_s / cached.pipeline_s
        record(
            stage="step_cache",
            where="in-process",
            threshold=threshold,
            steps=args.steps,
            pipeline_s=cached.pipeline_s,
            plain_pipeline_s=plain.pipeline_s,
            speedup=speedups[threshold],
            psnr_vs_plain_db=psnr(plain_png, bench.last_png),
        )
    return {"step_cache_speedups": speedups}


def sustained_throughput(url: str, image: str, args: argparse.Namespace) -> float:
    """Edits back to back with two in flight per worker: how busy the workers are kept.

    Duty = time inside the pipeline / (wall time x workers). Image codecs and HTTP run in the API
    process, overlapping the next job's pipeline, so this approaches 1 even when one request alone
    cannot. With several GPUs (EDITOR_DEVICES=0,1,...) edits/s against one GPU's is the scaling.
    """
    import httpx

    workers = len(httpx.get(f"{url}/v1/info", timeout=30).json()["workers"])
    count = max(4 * workers, 2 * args.repeats + 2)
    steps = args.throughput_steps or args.fast_steps
    cfg = 4.0 if steps == args.steps else 1.0

    async def go() -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=3600) as client:
            gate = asyncio.Semaphore(2 * workers)

            async def one(i: int) -> float:
                payload = {
                    "image": image,
                    "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
                    "num_inference_steps": steps,
                    "true_cfg_scale": cfg,
                    "seed": i,
                    "width": args.side,
                    "height": args.side,
                }
                if cfg > 1:
                    payload["negative_prompt"] = " "
                async with gate:
                    response = await client.post(f"{url}/v1/edits", json=payload)
                response.raise_for_status()
                return float(response.json()["timings"]["pipeline_s"])

            began = time.perf_counter()
            pipeline = sum(await asyncio.gather(*(one(i) for i in range(count))))
            return pipeline, time.perf_counter() - began

    before = [w["jobs_done"] for w in httpx.get(f"{url}/v1/info", timeout=30).json()["workers"]]
    pipeline, wall = asyncio.run(go())
    info = httpx.get(f"{url}/v1/info", timeout=30).json()
    after = [w["jobs_done"] for w in info["workers"]]
    record(
        stage="throughput",
        jobs_per_worker=[b - a for a, b in zip(before, after, strict=True)],
        devices=info["devices"],
        where="service",
        steps=steps,
        cfg=cfg,
        workers=workers,
        edits=count,
        wall_s=wall,
        edits_per_s=count / wall,
        duty=pipeline / (wall * workers),
    )
    return pipeline / (wall * workers)


def run_service(args: argparse.Namespace, best: dict[str, Any]) -> dict[str, Any]:
    """The tuned edits through POST /v1/edits, then a GPU hand-over (release, load)."""
    import httpx

    port = 8711
    env = dict(os.environ, EDITOR_MODEL=args.model, EDITOR_CACHE_DIR=str(args.cache_dir))
    if best.get("compile"):
        env["EDITOR_COMPILE"] = "true"
    if best.get("attention_backend"):
        env["EDITOR_ATTENTION_BACKEND"] = best["attention_backend"]
    log = open(args.out.with_suffix(".service.log"), "wb")  # noqa: SIM115
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "editor_service", "--port", str(port), "--log-level", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    progress("starting the editor service")
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("the editor exited; see the service log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        record(stage="load", where="service", seconds=time.perf_counter() - started, **best)
        image = base64.b64encode(source_png(args.side)).decode()
        figures: dict[str, list[float]] = {}
        with httpx.Client(timeout=3600) as client:
            # PNG level 1 is the API's default answer; level 0 (stored) is what the orchestrator
            # asks for, since it writes the files itself.
            for name, steps, cfg, repeats, level in (
                ("fast", args.fast_steps, 1.0, args.repeats, 1),
                ("fast_stored_png", args.fast_steps, 1.0, args.repeats, 0),
                ("full", args.steps, 4.0, args.repeats, 1),
            ):
                for i in range(repeats + 1):
                    payload = {
                        "image": image,
                        "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
                        "num_inference_steps": steps,
                        "true_cfg_scale": cfg,
                        "seed": i,
                        "width": args.side,
                        "height": args.side,
                        "compress_level": level,
                    }
                    began = time.perf_counter()
                    response = client.post(f"{url}/v1/edits", json=payload)
                    wall = time.perf_counter() - began
                    response.raise_for_status()
                    timings = response.json()["timings"]
                    if i == 0:
                        continue  # first request of a shape: warm allocator
                    figures.setdefault(name, []).append(wall)
                    overhead = figures.setdefault(f"overhead_{name}", [])
                    overhead.append(100 * (wall - timings["pipeline_s"]) / timings["pipeline_s"])
                    record(
                        stage="tuned",
                        where="service",
                        setting=name,
                        steps=steps,
                        cfg=cfg,
                        png_level=level,
                        client_s=wall,
                        overhead_pct=overhead[-1],
                        **timings,
                    )
            figures["duty"] = [sustained_throughput(url, image, args)]
            metrics = client.get(f"{url}/metrics").text
            peak = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("editor_device_memory_peak_bytes{")
            ]
            record(
                stage="memory",
                where="service",
                peak_gib=round(max(peak) / 2**30, 2) if peak else None,
            )
            for action in ("release", "load"):
                began = time.perf_counter()
                answer = client.post(f"{url}/v1/model/{action}").json()
                record(
                    stage="handover",
                    where="service",
                    client_s=time.perf_counter() - began,
                    **answer,
                )
        # Overhead: everything the service adds around the pipeline call of the same request
        # (HTTP, JSON and base64, validation, queueing, IPC, image decode and encode).
        summary: dict[str, Any] = {"sustained_duty": round(figures["duty"][0], 3)}
        for name in ("fast", "fast_stored_png", "full"):
            summary[f"service_{name}_s"] = statistics.median(figures[name])
            summary[f"overhead_{name}_pct"] = round(
                statistics.median(figures[f"overhead_{name}"]), 2
            )
        return summary
    finally:
        process.terminate()
        process.wait(120)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="random-full")
    parser.add_argument("--side", type=int, default=1024, help="source and output side")
    parser.add_argument("--steps", type=int, default=50, help="the true-CFG setting")
    parser.add_argument("--fast-steps", type=int, default=8, help="the few-step, no-CFG setting")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--forward-repeats", type=int, default=5)
    parser.add_argument(
        "--attention-backends",
        nargs="*",
        default=["native", "_native_cudnn", "_native_flash", "_flash_3", "flash"],
    )
    parser.add_argument("--step-cache", type=float, nargs="*", default=[0.05, 0.1])
    parser.add_argument("--compress-level", type=int, default=1, help="PNG level of the answers")
    parser.add_argument(
        "--part",
        nargs="+",
        choices=["in-process", "service", "step-cache", "modes"],
        default=["in-process", "service"],
    )
    parser.add_argument("--compile", action="store_true", help="service part alone: compile")
    parser.add_argument(
        "--throughput-steps",
        type=int,
        help="steps of the sustained-throughput edits (default --fast-steps; --steps: true CFG)",
    )
    parser.add_argument("--attention-backend", help="service part alone: attention backend")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=sorted(MODES),
        default=["lossless", "cache4", "fp8-row"],
        help="modes part: the service settings to compare; the first is the reference",
    )
    parser.add_argument("--fewest-steps", type=int, default=4, help="modes part: Lightning's 4")
    parser.add_argument(
        "--warmup-steps", type=int, default=6, help="modes part: steps of the untimed warm-up edits"
    )
    parser.add_argument("--full-repeats", type=int, default=1, help="modes part: --steps edits")
    parser.add_argument("--devices", default="", help="modes part: EDITOR_DEVICES")
    parser.add_argument("--ready-timeout-s", type=float, default=300)
    parser.add_argument(
        "--budget-s", type=float, default=0, help="modes part: start no mode past this (0: none)"
    )
    parser.add_argument(
        "--mode-reserve-s", type=float, default=100, help="modes part: what one mode needs at least"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editbench")
    parser.add_argument("--out", type=Path, default=Path("editor_bench.json"))
    parser.add_argument(
        "--stall-dump-s", type=float, default=0, help="dump every thread's stack after this long"
    )
    args = parser.parse_args()
    JOURNAL.append(args.out.with_suffix(".jsonl"))
    if args.stall_dump_s:
        faulthandler.dump_traceback_later(args.stall_dump_s, exit=False)

    if "in-process" in args.part:
        summary = run_in_process(args)
    elif args.part == ["modes"]:
        summary = {}
    else:
        summary = {"compile": args.compile, "attention_backend": args.attention_backend}
    if "service" in args.part:
        summary.update(run_service(args, summary))
    if "step-cache" in args.part:
        summary.update(run_step_cache(args))
    if "modes" in args.part:
        summary.update(run_modes(args, source_png(args.side), record, progress))
    record(stage="summary", **summary)
    args.out.write_text(json.dumps({"results": RESULTS, "summary": summary}, indent=1))
    print("\n".join(f"{k:>24}: {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
