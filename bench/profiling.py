"""Kernel tables from a torch profiler run: top kernels and their share, by kind (issue 30).

Used by bench/editor_profile.py and bench/judge_bench.py --profile. A kernel's kind comes from its
name (cuBLAS/CUTLASS/nvjet GEMMs, cuDNN/flash attention, Triton kernels that torch.compile
generated, PyTorch's own elementwise and reduction kernels, convolutions, copies); the shares are
of the summed device time of all kernels in the profiled region.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("attention", ("fmha", "flash", "sdpa", "attention", "attn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "wgmma", "cublas", "matmul", "grouped_mm")),
    ("conv", ("conv", "implicit_convolve", "winograd", "dgrad", "wgrad")),
    ("triton (compiled fusions)", ("triton",)),
    ("copy", ("memcpy", "memset", "copy", "cat", "transpose")),
    ("norm/reduce", ("norm", "reduce", "softmax", "mean", "sum")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "pointwise", "index")),
]


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"


def kernel_table(profiler: Any, top: int = 25) -> dict[str, Any]:
    """Device time per kernel and per kind, from a finished torch.profiler.profile."""
    kernels: dict[str, dict[str, float]] = {}
    events = list(profiler.events())
    for event in events:
        device_us = getattr(event, "device_time", None)
        if device_us is None:
            device_us = getattr(event, "cuda_time", 0.0)
        if str(getattr(event, "device_type", "")).endswith("CUDA") and device_us:
            entry = kernels.setdefault(event.name, {"us": 0.0, "calls": 0})
            entry["us"] += float(device_us)
            entry["calls"] += 1
    if not kernels:  # no GPU (a CPU smoke test): the operators' own CPU time instead
        for event in events:
            own = float(getattr(event, "self_cpu_time_total", 0.0))
            if own > 0:
                entry = kernels.setdefault(event.name, {"us": 0.0, "calls": 0})
                entry["us"] += own
                entry["calls"] += 1
    total = sum(k["us"] for k in kernels.values()) or 1.0
    kinds: dict[str, float] = {}
    for name, entry in kernels.items():
        kinds[kind_of(name)] = kinds.get(kind_of(name), 0.0) + entry["us"]
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1]["us"])[:top]
    return {
        "device_ms": round(total / 1e3, 3),
        "kinds": {
            kind: {"ms": round(us / 1e3, 3), "share": round(us / total, 4)}
            for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {
                "kernel": name[:160],
                "kind": kind_of(name),
                "ms": round(entry["us"] / 1e3, 3),
                "calls": int(entry["calls"]),
                "us_per_call": round(entry["us"] / max(entry["calls"], 1), 1),
                "share": round(entry["us"] / total, 4),
            }
            for name, entry in ranked
        ],
    }


@contextlib.contextmanager
def profiled(trace: Path | None) -> Iterator[Callable[[], Any]]:
    """A torch profiler (CPU and CUDA activity) around the block; yields a getter for it. With
    ``trace``, the Chrome trace is written there, gzip-compressed."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        yield lambda: prof
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    if trace is not None:
        raw = trace.with_suffix("")
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(trace, "wb") as dst:
            dst.write(src.read())
        raw.unlink()


def print_table(title: str, table: dict[str, Any], rows: int = 12) -> None:
    print(f"== {title}: {table['device_ms']:.1f} ms of kernels", flush=True)
    for kind, cell in table["kinds"].items():
        print(f"   {kind:<28}{cell['ms']:>10.1f} ms {100 * cell['share']:>6.1f} %")
    for entry in table["top"][:rows]:
        print(
            f"   {100 * entry['share']:>5.1f} % {entry['calls']:>6} x "
            f"{entry['us_per_call']:>9.1f} us  {entry['kind']:<12} {entry['kernel'][:90]}"
        )


def dump(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1))
