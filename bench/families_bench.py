"""The editor families at full size on a GPU: each family's service started, timed and checked.

    # One H100 (80 GB), ~5 min: FLUX.1 Kontext then LongCat-Image-Edit, random-full weights,
    # the service's defaults (regional compile on CUDA), the families' published settings
    timeout --kill-after=20 320 python bench/families_bench.py --budget-s 280 --out families.json
    # CPU check of the same code path on the tiny families:
    python bench/families_bench.py --families tiny-kontext tiny-longcat --side 64 --steps 2 \
        --out /tmp/families.json

Per family, one after the other (two full-size families do not fit one GPU together): start
``python -m editor_service`` with EDITOR_MODEL=<family source> and nothing else set, wait for
/ready (load seconds; the backend's own load and compile warm-up seconds read from its log),
then one edit through POST /v1/edits, one through POST /v1/images/edits (multipart, as the
OpenAI SDK sends it) and ``--edits`` - 1 more through /v1/edits, of a ``--side`` x ``--side``
source at the family's own defaults (steps and parameters left out of the request unless
``--steps`` is given; the answer says what ran).
Each answer's image is checked: its size, and that it is not blank (one value everywhere: what a
NaN latent decodes to) - with random weights the content means nothing. Last, the service's
peak device memory (its /metrics gauge), then the service is stopped before the next family.

Every figure is one JSON line on stdout, appended to ``<out>.jsonl`` as it is made (a killed
run keeps what it measured), and collected into ``--out`` at the end. Every step is bounded: the
start by --ready-timeout-s (and what is left of the budget), each request by
--request-timeout-s, the stop by --stop-timeout-s, and the whole run by --budget-s (a family
starts with its share of what is left; an edit that the last one's time says would not fit is
recorded as skipped). A family that fails to load compiled is started once more eager
(EDITOR_COMPILE=false) if --eager-retry-s are left; its row keeps the compiled error.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import io
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from editor_bench import INSTRUCTIONS, source_png
from editor_modes import ServiceFailed, editor
from PIL import Image

RESULTS: list[dict[str, Any]] = []
JOURNAL: list[Path] = []
# The backend's log lines (editor_service.backends.diffusers_backend) with its own timings.
LOADED = re.compile(r"loaded \S+ \(\w+\) on \S+ as \S+ in ([0-9.]+)s")
WARMED = re.compile(r"compiled and warmed up in ([0-9.]+)s")
# An exception's line: ValueError: ..., torch.OutOfMemoryError: ...
EXCEPTION_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception)\b:")
NAN_WARNING = "invalid value encountered in cast"  # numpy, when a NaN image is made uint8


def record(**fields: Any) -> None:
    fields["t"] = round(time.time(), 1)
    RESULTS.append(fields)
    line = json.dumps(fields)
    print(line, flush=True)
    for path in JOURNAL:
        with path.open("a") as journal:
            journal.write(line + "\n")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def image_check(data: bytes) -> dict[str, Any]:
    """Size and whether the image carries anything: a NaN latent decodes to one flat value."""
    with Image.open(io.BytesIO(data)) as opened:
        pixels = np.asarray(opened.convert("RGB"), dtype=np.float64)
    return {
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "pixel_mean": round(float(pixels.mean()), 2),
        "pixel_std": round(float(pixels.std()), 2),
        "distinct_values": int(np.unique(pixels).size),
        "blank": bool(pixels.std() == 0),
    }


def peak_gib(client: Any, url: str) -> float | None:
    """The service's peak device memory gauge (largest over its workers), GiB."""
    metrics = client.get(f"{url}/metrics").text
    peak = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("editor_device_memory_peak_bytes{")
    ]
    return round(max(peak) / 2**30, 2) if peak else None


def from_log(log: Path) -> dict[str, Any]:
    """The backend's load and warm-up seconds, and whether numpy met a NaN image."""
    text = log.read_text(errors="replace")
    found: dict[str, Any] = {"nan_warning_in_log": NAN_WARNING in text}
    if loaded := LOADED.search(text):
        found["backend_load_s"] = float(loaded.group(1))
    if warmed := WARMED.search(text):
        found["compile_warm_up_s"] = float(warmed.group(1))
    lines = text.splitlines()
    # The exception itself where there is one, else the last ERROR record.
    errors = [line for line in lines if EXCEPTION_LINE.search(line)] or [
        line for line in lines if " ERROR " in line
    ]
    if errors:
        found["last_error_in_log"] = errors[-1].strip()[:400]
    return found


def edit_json(client: Any, url: str, args: argparse.Namespace, image: str, i: int) -> Any:
    payload: dict[str, Any] = {
        "image": image,
        "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
        "seed": i,
        "compress_level": 0,
    }
    if args.steps is not None:
        payload["num_inference_steps"] = args.steps
    return client.post(f"{url}/v1/edits", json=payload)


def edit_form(client: Any, url: str, args: argparse.Namespace, png: bytes, i: int) -> Any:
    form: dict[str, str] = {"prompt": INSTRUCTIONS[i % len(INSTRUCTIONS)], "seed": str(i)}
    if args.steps is not None:
        form["num_inference_steps"] = str(args.steps)
    files = {"image": ("source.png", png, "image/png")}
    return client.post(f"{url}/v1/images/edits", data=form, files=files)


def run_family(
    name: str,
    port: int,
    args: argparse.Namespace,
    png: bytes,
    deadline: float,
    ready_timeout_s: float,
    settings: dict[str, str],
) -> dict[str, Any]:
    """One family's service: start, edits, memory, stop. Returns its summary row."""
    import httpx

    image = base64.b64encode(png).decode()
    tag = "".join(f".{k.removeprefix('EDITOR_').lower()}-{v}" for k, v in settings.items())
    log = args.out.with_suffix(f".{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}{tag}.log")
    env = {"EDITOR_MODEL": name, "EDITOR_CACHE_DIR": str(args.cache_dir), **settings}
    row: dict[str, Any] = {"family_source": name, **settings}
    progress(f"{name}: starting the editor (must be done in {deadline - time.monotonic():.0f} s)")
    started = time.perf_counter()
    try:
        with editor(env, log, port, ready_timeout_s, args.stop_timeout_s) as url:
            row["load_s"] = round(time.perf_counter() - started, 2)
            timeout = httpx.Timeout(args.request_timeout_s, connect=10)
            with httpx.Client(timeout=timeout) as client:
                info = client.get(f"{url}/v1/info").json()
                family = info["family"] or {}
                record(
                    stage="family_load",
                    family_source=name,
                    settings=settings,
                    load_s=row["load_s"],
                    family=family.get("name"),
                    default_steps=family.get("default_steps"),
                    defaults={p["name"]: p["default"] for p in family.get("parameters", [])},
                    options=info["model"]["options"],
                    model_class=info["model"]["model_class"],
                    dtype=info["model"]["dtype"],
                    devices=info["devices"],
                    **from_log(log),
                )
                row["family"] = family.get("name")
                last_s = 0.0
                # Each route once first; then the further /v1/edits (what the budget allows).
                calls = [("edits", 0), ("images/edits", 1)]
                calls += [("edits", i + 1) for i in range(1, args.edits)]
                for route, i in calls:
                    left = deadline - time.monotonic()
                    if last_s and left < 1.2 * last_s + args.stop_timeout_s / 4:
                        record(
                            stage="family_edit",
                            family_source=name,
                            route=route,
                            skipped=f"out of budget ({left:.0f} s left, last edit {last_s:.0f} s)",
                        )
                        continue
                    progress(f"{name}: POST /v1/{route} ({left:.0f} s left)")
                    began = time.perf_counter()
                    if route == "edits":
                        response = edit_json(client, url, args, image, i)
                    else:
                        response = edit_form(client, url, args, png, i)
                    last_s = time.perf_counter() - began
                    if response.status_code != 200:
                        raise ServiceFailed(
                            f"/v1/{route} answered {response.status_code}: {response.text[:300]}"
                        )
                    answer = response.json()
                    if route == "edits":
                        data = base64.b64decode(answer["image"])
                        ran = {
                            "steps": answer["num_inference_steps"],
                            "parameters": answer["parameters"],
                            **answer["timings"],
                        }
                    else:
                        data = base64.b64decode(answer["data"][0]["b64_json"])
                        ran = {"size": answer.get("size")}
                    check = image_check(data)
                    record(
                        stage="family_edit",
                        family_source=name,
                        route=route,
                        first=i == 0,  # the first request after load: allocator still warming
                        client_s=round(last_s, 3),
                        **ran,
                        **check,
                    )
                    row.setdefault("edit_s", []).append(round(last_s, 2))
                    row["blank"] = row.get("blank", False) or check["blank"]
                    row["image"] = f"{check['width']}x{check['height']}"
                row["peak_gib"] = peak_gib(client, url)
                record(stage="family_memory", family_source=name, peak_gib=row["peak_gib"])
        row.update(from_log(log))
    except (ServiceFailed, httpx.HTTPError, OSError) as exc:
        found = from_log(log)
        record(
            stage="family_error",
            family_source=name,
            settings=settings,
            error=f"{type(exc).__name__}: {exc}",
            **found,
        )
        row["error"] = found.get("last_error_in_log") or str(exc)[:300]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--families", nargs="+", default=["random-full-kontext", "random-full-longcat"]
    )
    parser.add_argument("--side", type=int, default=1024, help="the source image's side")
    parser.add_argument(
        "--steps", type=int, help="steps of every edit (default: left to the family's default)"
    )
    parser.add_argument("--edits", type=int, default=2, help="edits through /v1/edits per family")
    parser.add_argument("--budget-s", type=float, default=300, help="the whole run at most")
    parser.add_argument("--ready-timeout-s", type=float, default=200)
    parser.add_argument("--request-timeout-s", type=float, default=180)
    parser.add_argument("--stop-timeout-s", type=float, default=30)
    parser.add_argument(
        "--no-eager-retry",
        dest="eager_retry",
        action="store_false",
        help="a family that fails to load compiled is not started again eager",
    )
    parser.add_argument(
        "--eager-retry-s", type=float, default=90, help="retry eager only with this much left"
    )
    parser.add_argument("--port", type=int, default=8761)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editbench")
    parser.add_argument("--out", type=Path, default=Path("families_bench.json"))
    args = parser.parse_args()
    # `timeout` sends SIGTERM: leave through the context managers, so the service (in a session
    # of its own) is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    JOURNAL.append(args.out.with_suffix(".jsonl"))
    began = time.monotonic()
    with contextlib.suppress(Exception):
        import torch

        record(
            stage="environment",
            torch=torch.__version__,
            diffusers=importlib.metadata.version("diffusers"),
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            families=args.families,
            budget_s=args.budget_s,
        )
    png = source_png(args.side)
    rows = []
    end = began + args.budget_s
    for index, name in enumerate(args.families):
        share = (end - time.monotonic()) / (len(args.families) - index)  # shared by those left
        ready_s = min(args.ready_timeout_s, max(10.0, end - time.monotonic() - 10))
        row = run_family(
            name, 2 * index + args.port, args, png, time.monotonic() + share, ready_s, {}
        )
        if "load_s" not in row and args.eager_retry and end - time.monotonic() > args.eager_retry_s:
            # It did not load as the service's default (compiled on CUDA): its edits eager
            # are still worth having; the record says so.
            progress(f"{name}: did not load compiled; once more with EDITOR_COMPILE=false")
            share = (end - time.monotonic()) / (len(args.families) - index)
            ready_s = min(args.ready_timeout_s, max(10.0, end - time.monotonic() - 10))
            eager = {"EDITOR_COMPILE": "false"}
            retried = run_family(
                name, 2 * index + 1 + args.port, args, png, time.monotonic() + share, ready_s, eager
            )
            row = {**retried, "compiled_error": row.get("error")}
        rows.append(row)
    summary = {"families": rows, "wall_s": round(time.monotonic() - began, 1)}
    record(stage="summary", **summary)
    args.out.write_text(json.dumps({"results": RESULTS, "summary": summary}, indent=1))
    for row in rows:
        print(
            f"{row['family_source']:>22}: "
            + ", ".join(f"{k} {v}" for k, v in row.items() if k != "family_source")
        )


if __name__ == "__main__":
    main()
