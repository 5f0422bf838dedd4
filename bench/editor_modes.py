"""The editor's modes through the service, one service start per mode: speed and image change.

Used by ``bench/editor_bench.py --part modes``. Each mode is a set of EDITOR_* settings; each is
started as a real ``python -m editor_service``, warmed up with two short edits, then times the
same edits - ``--steps`` with true CFG, ``--fast-steps`` and ``--fewest-steps`` without - on the
same seeds. Every image of a mode is compared with the reference mode's (the first one,
``lossless`` by default) of the same setting and seed: PSNR and SSIM. With random weights this
shows how far the mode moves the numbers, not what it does to the quality of real edits.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COMPILED = {"EDITOR_COMPILE": "true"}

# name -> (EDITOR_* settings, what it is). "lossless" is the service's default setting.
MODES: dict[str, tuple[dict[str, str], str]] = {
    "lossless": (COMPILED, "regional compile (the default on CUDA), diffusers' processor"),
    "fused": (
        {**COMPILED, "EDITOR_FUSED_ATTENTION": "true"},
        "regional compile, the fused joint attention (qwen_kernels; no gain measured)",
    ),
    "eager": ({"EDITOR_COMPILE": "false"}, "no compile"),
    "parked": (
        {**COMPILED, "EDITOR_PARK_TEXT_ENCODER": "true"},
        "lossless, the text encoder's linear layers in host memory between their calls",
    ),
    "nondeterministic": (
        {**COMPILED, "EDITOR_DETERMINISTIC": "false"},
        "regional compile, torch's default (non-deterministic) kernels: what determinism costs",
    ),
    "cudnn": (
        {**COMPILED, "EDITOR_ATTENTION_BACKEND": "_native_cudnn"},
        "regional compile, cuDNN attention (lossless candidate)",
    ),
    "flash": (
        {**COMPILED, "EDITOR_ATTENTION_BACKEND": "_native_flash"},
        "regional compile, PyTorch's flash attention (lossless candidate)",
    ),
    "fp8-row": (
        {**COMPILED, "EDITOR_TRANSFORMER_FP8": "row"},
        "regional compile, FP8 blocks, scales per row",
    ),
    "fp8-tensor": (
        {**COMPILED, "EDITOR_TRANSFORMER_FP8": "tensor"},
        "regional compile, FP8 blocks, one scale per tensor",
    ),
    "cache3": (
        {**COMPILED, "EDITOR_STEP_CACHE_INTERVAL": "3", "EDITOR_STEP_CACHE_WARMUP": "3"},
        "regional compile, step cache: 3 full steps, then every 3rd",
    ),
    "cache4": (
        {**COMPILED, "EDITOR_STEP_CACHE_INTERVAL": "4", "EDITOR_STEP_CACHE_WARMUP": "3"},
        "regional compile, step cache: 3 full steps, then every 4th",
    ),
    "fp8-row+cache4": (
        {
            **COMPILED,
            "EDITOR_TRANSFORMER_FP8": "row",
            "EDITOR_STEP_CACHE_INTERVAL": "4",
            "EDITOR_STEP_CACHE_WARMUP": "3",
        },
        "both faster modes",
    ),
}

Record = Callable[..., None]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB images (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, per channel over the valid region, averaged), as skimage's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[None]
    offsets = torch.arange(11, dtype=torch.float64) - 5
    line = torch.exp(-(offsets**2) / (2 * 1.5**2))
    line /= line.sum()
    window = (line[:, None] * line[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(index.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def pixels(png_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB"))


class ServiceFailed(RuntimeError):
    pass


@contextlib.contextmanager
def editor(
    env: dict[str, str],
    log_path: Path,
    port: int,
    ready_timeout_s: float,
    stop_timeout_s: float = 120,
) -> Iterator[str]:
    """A real editor process with ``env``; yields its URL once /ready answers 200. Stopped with
    SIGTERM (it drains), killed if still there after ``stop_timeout_s``."""
    import httpx

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "editor_service", "--port", str(port), "--log-level", "info"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # its own group: a kill takes its worker processes too
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    raise ServiceFailed(f"the editor exited ({process.returncode}): {tail}")
                if time.monotonic() > deadline:
                    raise ServiceFailed(f"the editor was not ready in {ready_timeout_s:.0f} s")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                    workers = httpx.get(f"{url}/v1/info", timeout=2).json()["workers"]
                    if any(w["restarts"] > 0 or w["state"] == "failed" for w in workers):
                        # A worker that could not load is retried by the pool; a bench stops.
                        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                        raise ServiceFailed(f"a worker failed to load: {tail}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def run_modes(
    args: Any, source_png: bytes, record: Record, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Every mode in ``args.modes``; the first is the reference for PSNR/SSIM and speed-ups."""
    import httpx

    image = base64.b64encode(source_png).decode()
    settings = [
        (f"{args.steps}-step-cfg", args.steps, 4.0, args.full_repeats),
        (f"{args.fast_steps}-step", args.fast_steps, 1.0, args.repeats),
        (f"{args.fewest_steps}-step", args.fewest_steps, 1.0, args.repeats),
    ]
    reference: dict[tuple[str, int], np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    began = time.monotonic()
    for index, mode in enumerate(args.modes):
        env_extra, about = MODES[mode]
        if args.budget_s and time.monotonic() - began > args.budget_s - args.mode_reserve_s:
            record(stage="mode_error", mode=mode, error="skipped: --budget-s would be exceeded")
            table[mode] = {"error": "skipped: out of --budget-s"}
            continue
        env = {
            "EDITOR_MODEL": args.model,
            "EDITOR_CACHE_DIR": str(args.cache_dir),
            "EDITOR_DEVICES": args.devices,
            **env_extra,
        }
        log = args.out.with_suffix(f".{mode}.log")
        progress(f"mode {mode}: starting the editor ({about})")
        started = time.perf_counter()
        try:
            with editor(env, log, 8731 + index, args.ready_timeout_s) as url:
                load_s = time.perf_counter() - started
                with httpx.Client(timeout=3600) as client:
                    options = client.get(f"{url}/v1/info").json()["model"]["options"]
                    record(stage="mode_load", mode=mode, about=about, seconds=load_s, **options)
                    for cfg in (4.0, 1.0):  # the shapes and a cache's both paths, untimed
                        edit(client, url, image, args, args.warmup_steps, cfg, seed=0)
                    for name, steps, cfg, repeats in settings:
                        progress(f"mode {mode}: {repeats} x {name}")
                        times = []
                        for r in range(repeats):
                            seed = 1000 + r
                            began = time.perf_counter()
                            answer = edit(client, url, image, args, steps, cfg, seed)
                            wall = time.perf_counter() - began
                            times.append(wall)
                            got = pixels(answer["image"])
                            change: dict[str, float | None] = {"psnr_db": None, "ssim": None}
                            if index == 0:
                                reference[(name, seed)] = got
                            elif (name, seed) in reference:
                                ref = reference[(name, seed)]
                                change = {"psnr_db": psnr(got, ref), "ssim": ssim(got, ref)}
                            record(
                                stage="mode_edit",
                                mode=mode,
                                setting=name,
                                steps=steps,
                                cfg=cfg,
                                seed=seed,
                                client_s=wall,
                                options=answer["model"]["options"],
                                **answer["timings"],
                                **change,
                            )
                            if change["psnr_db"] is not None:
                                cell = table.setdefault(mode, {}).setdefault(name, {})
                                cell.setdefault("psnr", []).append(change["psnr_db"])
                                cell.setdefault("ssim", []).append(change["ssim"])
                        table.setdefault(mode, {}).setdefault(name, {})["s"] = statistics.median(
                            times
                        )
                    metrics = client.get(f"{url}/metrics").text
                    peak = [
                        float(line.split()[-1])
                        for line in metrics.splitlines()
                        if line.startswith("editor_device_memory_peak_bytes{")
                    ]
                    peak_gib = round(max(peak) / 2**30, 2) if peak else None
                    record(stage="mode_memory", mode=mode, peak_gib=peak_gib)
                    table[mode]["peak_gib"] = peak_gib
        except (ServiceFailed, httpx.HTTPError) as exc:
            record(stage="mode_error", mode=mode, error=f"{type(exc).__name__}: {exc}")
            table[mode] = {"error": str(exc)[:200]}
    return summarize(args.modes, [s[0] for s in settings], table)


def edit(
    client: Any, url: str, image: str, args: Any, steps: int, cfg: float, seed: int
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "image": image,
        "instruction": "replace the wooden table with a glass one and keep everything else",
        "num_inference_steps": steps,
        "true_cfg_scale": cfg,
        "seed": seed,
        "width": args.side,
        "height": args.side,
        "compress_level": 0,
    }
    if cfg > 1:
        payload["negative_prompt"] = " "
    response = client.post(f"{url}/v1/edits", json=payload)
    if response.status_code != 200:
        raise ServiceFailed(f"{steps}-step edit answered {response.status_code}: {response.text}")
    answer: dict[str, Any] = response.json()
    return answer


def summarize(
    modes: list[str], settings: list[str], table: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Median seconds per setting, speed-up against the reference, mean PSNR/SSIM; printed."""
    reference = table.get(modes[0], {})
    summary: dict[str, Any] = {}
    lines = [f"{'mode':<16}" + "".join(f"{s:>34}" for s in settings) + f"{'peak GiB':>10}"]
    for mode in modes:
        row = table.get(mode, {})
        if "error" in row:
            lines.append(f"{mode:<16}  not measured: {row['error']}")
            summary[mode] = {"error": row["error"]}
            continue
        cells = []
        for setting in settings:
            cell = row.get(setting, {})
            seconds, base = cell.get("s"), reference.get(setting, {}).get("s")
            entry: dict[str, Any] = {"s": seconds}
            text = "-" if seconds is None else f"{seconds:.2f} s"
            if seconds and base and mode != modes[0]:
                entry["speedup"] = base / seconds
                text += f" x{base / seconds:.2f}"
            if cell.get("psnr"):
                entry["psnr_db"] = statistics.fmean(cell["psnr"])
                entry["ssim"] = statistics.fmean(cell["ssim"])
                text += f" {entry['psnr_db']:.1f}dB {entry['ssim']:.3f}"
            summary[f"{mode}/{setting}"] = entry
            cells.append(f"{text:>34}")
        lines.append(f"{mode:<16}" + "".join(cells) + f"{row.get('peak_gib') or '-':>10}")
    print("\n".join(lines), flush=True)
    return summary
