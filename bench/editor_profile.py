"""Where an edit's time goes, in-process: phases, kernels, FLOP rates, memory (issue 30).

    # GPU (random-full, 1024x1024; ~4 min for both variants on an H100):
    python bench/editor_profile.py --out-dir DIR
    # CPU smoke test of the same code path:
    python bench/editor_profile.py --model tiny --side 64 --steps 3 --fast-steps 2 --out-dir DIR

For each variant (``reference``: diffusers' attention processor; ``fused``: the editor's default,
editor_service.backends.qwen_kernels), the editor's backend is loaded as a worker loads it (compiled
on CUDA by default, with its warm-up) and runs:

- a --steps true-CFG edit with CUDA events around each component's calls (text encoder,
  transformer, VAE encode/decode): each phase's time and share, and the peak memory;
- --fast-steps edits without CFG (median of --repeats);
- two transformer forwards on the edit's own inputs under the torch profiler: kernels by kind, the
  top kernels, and the FLOP rate of the GEMMs and of attention against the device's peak
  (FLOPs counted from the shapes: 24 C^2 per token and block for the linear layers, 4 S^2 C per
  block for attention); the Chrome trace is written gzip-compressed;
- the same seeds in every variant: PSNR of each variant's images against the first's.

Each figure is a JSON line in DIR/editor-profile.jsonl; the summary is DIR/editor-profile.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from profiling import kernel_table, print_table, profiled

VARIANTS = {
    "reference": {"fused_attention": False},
    "fused": {"fused_attention": True},
}
OUT: list[Path] = []


def record(**fields: Any) -> None:
    line = json.dumps(fields)
    print(line, flush=True)
    for path in OUT:
        with path.open("a") as journal:
            journal.write(line + "\n")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


class Phases:
    """CUDA events (or wall clock on the CPU) around each call of the pipeline's components."""

    def __init__(self, pipe: Any, cuda: bool) -> None:
        import torch

        self.torch = torch
        self.cuda = cuda
        self.spans: list[tuple[str, Any, Any]] = []
        self.open: dict[str, Any] = {}
        self.handles: list[Any] = []
        self.patched: list[tuple[Any, str, Any]] = []
        for name in ("text_encoder", "transformer"):
            module = getattr(pipe, name)
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))
        for method in ("encode", "decode"):
            original = getattr(pipe.vae, method)
            self.patched.append((pipe.vae, method, original))
            setattr(pipe.vae, method, self._wrap(f"vae_{method}", original))

    def _mark(self) -> Any:
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _start(self, name: str) -> Any:
        def hook(*_: Any) -> None:
            self.open[name] = self._mark()

        return hook

    def _stop(self, name: str) -> Any:
        def hook(*_: Any) -> None:
            self.spans.append((name, self.open.pop(name), self._mark()))

        return hook

    def _wrap(self, name: str, original: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            began = self._mark()
            out = original(*args, **kwargs)
            self.spans.append((name, began, self._mark()))
            return out

        return wrapped

    def totals(self) -> dict[str, dict[str, float]]:
        if self.cuda:
            self.torch.cuda.synchronize()
        out: dict[str, dict[str, float]] = {}
        for name, began, ended in self.spans:
            ms = began.elapsed_time(ended) if self.cuda else (ended - began) * 1e3
            cell = out.setdefault(name, {"ms": 0.0, "calls": 0})
            cell["ms"] += ms
            cell["calls"] += 1
        return out

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        for owner, method, original in self.patched:
            setattr(owner, method, original)


def source(side: int) -> Any:
    from editor_service.backends.base import RGBImage

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * 255 // side, y * 255 // side, (x * y) % 256], -1)
    pixels = np.clip(base + rng.integers(0, 30, (side, side, 3)), 0, 255).astype("uint8")
    return RGBImage.from_pil(Image.fromarray(pixels))


def job(args: argparse.Namespace, steps: int, cfg: float, seed: int) -> Any:
    from editor_service.backends.base import EditJob

    return EditJob(
        job_id=f"1-profile-{steps}-{seed}",
        image=source(args.side),
        instruction="replace the wooden table with a glass one and keep everything else",
        negative_prompt=" ",
        num_inference_steps=steps,
        true_cfg_scale=cfg,
        seed=seed,
        width=args.side,
        height=args.side,
    )


def transformer_flops(transformer: Any, kwargs: dict[str, Any]) -> tuple[float, float]:
    """FLOPs (2 x multiply-adds) of one forward's blocks, from the shapes: (linear layers,
    attention). The embedders and the output layer are <1 %."""
    config = transformer.config
    width = config.num_attention_heads * config.attention_head_dim
    batch = kwargs["hidden_states"].shape[0]
    joint = kwargs["hidden_states"].shape[1] + kwargs["encoder_hidden_states"].shape[1]
    # Per block: q, k, v, out (4 C^2) and the MLP (8 C^2) on each token of its stream, x2 for
    # FLOPs; attention: QK^T and PV, 2 x 2 S^2 C.
    linear = 24 * width**2 * joint
    attention = 4 * joint**2 * width
    layers = batch * config.num_layers
    return float(layers * linear), float(layers * attention)


def gpu_clocks() -> str:
    """SM clock, power and temperature as nvidia-smi reads them now ('' without it)."""
    import subprocess

    try:
        return subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=clocks.sm,power.draw,temperature.gpu",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


SMI_FIELDS = (
    "timestamp,clocks.sm,clocks.mem,power.draw.instant,power.draw.average,temperature.gpu,"
    "temperature.memory,utilization.gpu,clocks_event_reasons.active,"
    "clocks_event_reasons.sw_power_cap,clocks_event_reasons.hw_slowdown,"
    "clocks_event_reasons.hw_thermal_slowdown,clocks_event_reasons.hw_power_brake_slowdown,"
    "clocks_event_reasons.sw_thermal_slowdown"
)


def sample_gpu(path: Path | None) -> Any:
    """nvidia-smi sampling every 100 ms into ``path`` (CSV) while the caller runs; None when
    there is no path or no nvidia-smi. The caller terminates the returned process."""
    import subprocess

    if path is None:
        return None
    try:
        return subprocess.Popen(
            ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv", "-lms", "100"],
            stdout=path.open("w"),
            stderr=subprocess.STDOUT,
        )
    except OSError:
        return None


def sustained(
    count: int, transformer: Any, kwargs: dict[str, Any], name: str, smi_log: Path | None = None
) -> dict[str, Any]:
    """``count`` forwards back to back, each timed with CUDA events (wall clock on the CPU), with
    the GPU's clocks read every tenth and, with ``smi_log``, nvidia-smi's clocks, power,
    temperatures and clock-event reasons sampled every 100 ms: does a forward slow down when the
    GPU stays busy, and what does the GPU say about it?"""
    import torch

    cuda = torch.cuda.is_available()
    times: list[float] = []
    ended_at: list[float] = []  # wall clock at each forward's end, to line up with the samples
    clocks: list[str] = [gpu_clocks()] if cuda else []
    sampler = sample_gpu(smi_log) if cuda else None
    try:
        with torch.inference_mode():
            for i in range(count):
                if cuda:
                    began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(True)
                    began.record()
                    transformer(**kwargs)
                    ended.record()
                    ended.synchronize()
                    times.append(began.elapsed_time(ended))
                else:
                    start = time.perf_counter()
                    transformer(**kwargs)
                    times.append((time.perf_counter() - start) * 1e3)
                ended_at.append(round(time.time(), 3))
                if cuda and i % 10 == 9:
                    clocks.append(gpu_clocks())
    finally:
        if sampler is not None:
            time.sleep(0.5)
            sampler.terminate()
            sampler.wait(timeout=10)
    figures = {
        "forward_ms": [round(t, 2) for t in times],
        "ended_at": ended_at,
        "first5_ms": statistics.mean(times[:5]),
        "last5_ms": statistics.mean(times[-5:]),
        "clocks_power_temp": clocks,
        "smi_log": str(smi_log) if sampler is not None else None,
    }
    record(variant=name, stage="sustained-forwards", **figures)
    return figures


def run_variant(args: argparse.Namespace, name: str, images: dict[str, Any]) -> dict[str, Any]:
    import torch

    from editor_service.backends.base import BackendSpec
    from editor_service.backends.diffusers_backend import DiffusersEditBackend

    cuda = torch.cuda.is_available()
    device = "cuda:0" if cuda else "cpu"
    options = {"deterministic": True, **VARIANTS[name]}
    backend = DiffusersEditBackend(
        BackendSpec("diffusers", args.model, None, "auto", str(args.cache_dir), options=options)
    )
    began = time.perf_counter()
    loaded = backend.load(device)
    load_s = time.perf_counter() - began
    pipe = backend.pipe
    weights = {
        component: round(
            sum(p.numel() * p.element_size() for p in getattr(pipe, component).parameters())
            / 2**30,
            3,
        )
        for component in ("transformer", "text_encoder", "vae")
    }
    record(variant=name, stage="load", seconds=load_s, details=loaded.details, weights_gib=weights)
    summary: dict[str, Any] = {"load_s": load_s, "weights_gib": weights}

    # The long edit, in phases.
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    phases = Phases(pipe, cuda)
    began = time.perf_counter()
    out = backend.edit(job(args, args.steps, 4.0, 1000), lambda: False)
    wall = time.perf_counter() - began
    totals = phases.totals()
    phases.close()
    accounted = sum(c["ms"] for c in totals.values())
    shares = {k: {**v, "share": round(v["ms"] / (wall * 1e3), 4)} for k, v in totals.items()}
    shares["rest (host, scheduler, PNG)"] = {
        "ms": wall * 1e3 - accounted,
        "calls": 0,
        "share": round(1 - accounted / (wall * 1e3), 4),
    }
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    record(
        variant=name,
        stage=f"{args.steps}-step-cfg",
        seconds=wall,
        phases=shares,
        peak_gib=peak,
        pipeline_s=out.pipeline_s,
    )
    images[f"{name}/{args.steps}-step-cfg"] = np.asarray(out.image.to_pil())
    summary[f"{args.steps}-step-cfg_s"] = wall
    summary["phases"] = shares
    summary["peak_gib"] = peak

    times = []
    for r in range(args.repeats):
        began = time.perf_counter()
        out = backend.edit(job(args, args.fast_steps, 1.0, 2000 + r), lambda: False)
        times.append(time.perf_counter() - began)
        images[f"{name}/{args.fast_steps}-step/{r}"] = np.asarray(out.image.to_pil())
    summary[f"{args.fast_steps}-step_s"] = statistics.median(times)
    record(variant=name, stage=f"{args.fast_steps}-step", seconds=times)

    # Two transformer forwards on an edit's own inputs, under the profiler.
    captured: dict[str, Any] = {}

    def capture(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if not captured:
            captured.update(
                {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            )

    handle = pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    backend.edit(job(args, 2, 1.0, 3000), lambda: False)  # the family takes 2 steps at least
    handle.remove()
    with torch.inference_mode():
        pipe.transformer(**captured)  # untimed: the profiler's own start
        with profiled(args.out_dir / f"editor-trace-{name}.json.gz") as prof:
            for _ in range(2):
                pipe.transformer(**captured)
    table = kernel_table(prof())
    if args.sustained:
        summary["sustained"] = sustained(
            args.sustained,
            pipe.transformer,
            captured,
            name,
            args.out_dir / f"smi-{name}.csv" if args.smi_log else None,
        )
        if args.sustained_rest > 0:
            time.sleep(args.sustained_rest)
            summary["sustained_after_rest"] = sustained(
                max(1, args.sustained // 3),
                pipe.transformer,
                captured,
                f"{name}-after-rest",
                args.out_dir / f"smi-{name}-after-rest.csv" if args.smi_log else None,
            )
    gemm_flops, attention_flops = transformer_flops(pipe.transformer, captured)
    flops = gemm_flops + attention_flops
    kinds = table["kinds"]
    forward_ms = table["device_ms"] / 2
    rates = {
        "forward_ms": forward_ms,
        "tflop_per_forward": flops / 1e12,
        "tflops_whole_forward": flops / (forward_ms / 1e3) / 1e12,
        # The profiled kinds' times are for two forwards.
        "tflops_gemm": 2 * gemm_flops / (kinds.get("gemm", {}).get("ms", 0) or 1e9) * 1e3 / 1e12,
        "tflops_attention": 2
        * attention_flops
        / (kinds.get("attention", {}).get("ms", 0) or 1e9)
        * 1e3
        / 1e12,
        "tokens": {
            "image": int(captured["hidden_states"].shape[1]),
            "text": int(captured["encoder_hidden_states"].shape[1]),
        },
    }
    record(variant=name, stage="transformer-kernels", **rates, kernels=table)
    print_table(f"{name}: two transformer forwards", table)
    summary["transformer"] = {**rates, "kinds": kinds}
    # Everything that holds the pipeline goes before the next variant loads (the first round
    # ran out of memory on an H100 loading the second with the first still referenced).
    captured.clear()
    del pipe, phases, out, prof, handle
    backend.release()
    torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random-full")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--fast-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--sustained", type=int, default=0, help="forwards back to back, each timed (0: none)"
    )
    parser.add_argument(
        "--smi-log",
        action="store_true",
        help="with --sustained: nvidia-smi's clocks, power, temperatures and clock-event reasons "
        "every 100 ms into OUT_DIR/smi-VARIANT.csv",
    )
    parser.add_argument(
        "--sustained-rest",
        type=float,
        default=0.0,
        help="with --sustained: rest this many seconds after the forwards, then run a third as "
        "many again (does a slowdown go away when the GPU rests?)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editbench")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    OUT.append(args.out_dir / "editor-profile.jsonl")
    images: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for name in args.variants:
        try:
            summary[name] = run_variant(args, name, images)
        except Exception as exc:  # a failed variant is recorded; the next one still runs
            record(variant=name, stage="error", error=f"{type(exc).__name__}: {exc}")
            summary[name] = {"error": str(exc)[:300]}
    first = args.variants[0]
    for key, pixels in images.items():
        name, setting = key.split("/", 1)
        if name != first and f"{first}/{setting}" in images:
            value = psnr(pixels, images[f"{first}/{setting}"])
            summary[name].setdefault("psnr_db_vs_" + first, {})[setting] = value
            record(variant=name, stage="psnr", setting=setting, against=first, psnr_db=value)
    (args.out_dir / "editor-profile.json").write_text(json.dumps(summary, indent=1, default=str))
    for name, cell in summary.items():
        if "error" in cell:
            print(f"{name}: error {cell['error']}")
            continue
        t = cell["transformer"]
        print(
            f"{name:<10} {args.steps}-step CFG {cell[f'{args.steps}-step-cfg_s']:.2f} s, "
            f"{args.fast_steps}-step {cell[f'{args.fast_steps}-step_s']:.2f} s, "
            f"forward {t['forward_ms']:.1f} ms ({t['tflops_whole_forward']:.0f} TFLOP/s; GEMM "
            f"{t['tflops_gemm']:.0f}, attention {t['tflops_attention']:.0f}), "
            f"peak {cell['peak_gib']} GiB, PSNR {cell.get('psnr_db_vs_' + first, '-')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
