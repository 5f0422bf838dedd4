"""Judge benchmark: items per second, in-process and through the service, in one run.

    # H100, Qwen3-VL-30B-A3B's architecture with random weights (timing does not depend on them):
    python bench/judge_bench.py --out judge.json
    # CPU smoke test of the same code path:
    python bench/judge_bench.py --model tiny --side 64 --items 8 --generate-items 2
    # deterministic mode's cost (REWARD_DETERMINISTIC), single and viescore through the service:
    python bench/judge_bench.py --modes default deterministic --runs single/expected \
        viescore/expected --out judge-deterministic.json
    # the judge's layer variants (issue 30) one after another on one machine, through the service:
    python bench/judge_bench.py --part service --variants eager compiled \
        --runs single/expected viescore/expected --no-handover --items 320 --clients 16
    # preparation on a stream of its own (the default) vs on the model's stream, same machine:
    python bench/judge_bench.py --part service --variants defaults default-stream \
        --runs single/expected viescore/expected --no-handover --items 320 --clients 16

Items carry two images (source, edited) of --side x --side. In-process, the service's own code
builds the questions (reward_service.scorer) and the backend prepares and scores them batch by
batch: once timing the model alone (inputs prepared beforehand), once with preparation in line.
Then the service is started and concurrent clients send the same items over HTTP; the CPU work
overlaps the model there. Every figure is a JSON line; a table is printed last.

``--variants`` runs all of it once per backend-option variant (VARIANTS below, or NAME=JSON),
each on top of ``--backend-options``, one service start each; every figure names its variant and
options, the summary gives each variant's speed-up against the first, and ``scores`` records how
far each variant's scores moved from the first's on the same items (beside ``batch_noise``: the
first --noise-items items each scored alone, in a request and so a batch of its own, against the
same items among the concurrent requests: how far batching alone moves a non-deterministic
judge's scores, the noise floor to read those moves against).

``--modes`` runs all of it once per judge mode (default, deterministic); each figure says which
(``deterministic``), and the summary gives deterministic mode's cost in throughput per protocol.
Deterministic torch kernels stay on in this process once a deterministic run has loaded, so the
default mode runs first.
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
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS: list[dict[str, Any]] = []
JSON_HEADERS = {"content-type": "application/json"}
JOURNAL: list[Path] = []  # each record is appended here at once: a killed run keeps its figures
CONTEXT: dict[str, Any] = {}  # fields every record carries (the variant being measured)
# Named backend-option variants (REWARD_BACKEND_OPTIONS, merged over --backend-options);
# reward_service/backends/hf/compiled_layers.py says what each option does.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},  # the device's defaults, whatever they are
    # the defaults with each batch prepared on the model's own CUDA stream (before prepare_stream)
    "default-stream": {"prepare_stream": "default"},
    # transformers' own layers, as before issue 30
    "eager": {"compile": False, "vision_attention": "per_image", "patch_embed": "conv"},
    # issue 30's changes without compile
    "uncompiled": {"compile": False, "vision_attention": "grouped", "patch_embed": "linear"},
    # all of them: the CUDA defaults
    "compiled": {"compile": True, "vision_attention": "grouped", "patch_embed": "linear"},
    "compiled-per-image": {
        "compile": True,
        "vision_attention": "per_image",
        "patch_embed": "linear",
    },
    # the defaults with each question on a copy of its prefix's KV cache (before prefix folding)
    "copied": {"prefix_passes": "copied"},
    # the defaults with the questions' common text left in each question (before it joined the
    # prefix)
    "common-off": {"prefix_common_text": False},
}


def record(**fields: Any) -> None:
    fields = {**CONTEXT, **fields, "t": round(time.time(), 1)}
    RESULTS.append(fields)
    line = json.dumps(fields)
    print(line, flush=True)
    for path in JOURNAL:
        with path.open("a") as journal:
            journal.write(line + "\n")


def progress(message: str) -> None:
    """Where the run is, before each long step (stderr, unbuffered)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def png(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([(x + seed) % 256, (y * 2) % 256, (x * y) % 256], -1)
    pixels = np.clip(base + rng.integers(0, 40, (side, side, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def items(count: int, side: int) -> list[dict[str, Any]]:
    """Distinct items (no two share an image), cycling over 8 image pairs."""
    pairs = [(png(side, 2 * i), png(side, 2 * i + 1)) for i in range(8)]
    return [
        {
            "id": f"item-{i}",
            "source_image": base64.b64encode(pairs[i % 8][0]).decode(),
            "edited_image": base64.b64encode(pairs[i % 8][1]).decode(),
            "instruction": f"make the sky red and add {i % 5 + 1} birds",
            "category": "color",
        }
        for i in range(count)
    ]


def variant_options(args: argparse.Namespace, variant: str) -> str:
    """The variant's REWARD_BACKEND_OPTIONS (JSON): --backend-options, then the variant's."""
    name, _, given = variant.partition("=")
    options = json.loads(given) if given else VARIANTS[name]
    return json.dumps({**json.loads(args.backend_options), **options})


def in_process(args: argparse.Namespace, deterministic: bool) -> dict[str, Any]:
    """The backend alone, as the service's model thread drives it, batch after batch."""
    import torch

    from reward_service.backends.base import BackendSpec
    from reward_service.backends.transformers_backend import TransformersJudgeBackend
    from reward_service.messages import decode_item
    from reward_service.protocols import ProtocolRegistry
    from reward_service.scorer import build_items, decode_items
    from shared_schemas import ScoreRequest

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    backend = TransformersJudgeBackend(
        BackendSpec(
            "transformers",
            args.model,
            None,
            "auto",
            str(args.cache_dir),
            json.loads(CONTEXT.get("backend_options", args.backend_options)),
            deterministic=deterministic,
        )
    )
    started = time.perf_counter()
    progress(f"loading {args.model} on {device}")
    backend.load(device)
    record(
        stage="load",
        where="in-process",
        deterministic=deterministic,
        seconds=time.perf_counter() - started,
    )
    registry = ProtocolRegistry.load(None)
    summary: dict[str, Any] = {}

    def seconds(batches: list[Any], prepare_inline: bool = False) -> float:
        """The model over prepared batches (or raw ones, prepared in line), GPU work included."""
        began = time.perf_counter()
        for batch in batches:
            backend.score(backend.prepare(batch) if prepare_inline else batch)
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    for protocol_name in ("single", "viescore"):
        protocol = registry.get(protocol_name)
        per_item = len(protocol.spec.questions)
        request = ScoreRequest.model_validate(
            {"items": items(args.in_process_items, args.side), "protocol": protocol_name}
        )
        images = decode_items(request.items, max_pixels=2**40)
        by_item = [decode_item(i) for i in build_items(protocol, request, images, "bench")]
        per_batch = max(1, args.batch_images // protocol.spec.images_per_item)
        batches = [by_item[i : i + per_batch] for i in range(0, len(by_item), per_batch)]
        questions = [q for item in by_item for q in item.questions]
        progress(f"{protocol_name}: {len(questions)} questions in {len(batches)} batches; warm-up")
        backend.score(backend.prepare(batches[0]))  # warm-up
        progress(f"{protocol_name}: timing")
        count = len(questions) / per_item
        extra: dict[str, Any] = {}
        planner = backend.planner
        if protocol_name == "viescore" and planner.options.encode_images_apart:
            # The model alone as it was before each of the two viescore savings, for what each
            # is worth: every image encoded wherever it is shown, then one prefix pass padded
            # to the longest prefix.
            configured = planner.options
            for name, reuse, split in (
                ("no_image_reuse_no_prefix_buckets", False, False),
                ("image_reuse_no_prefix_buckets", True, False),
            ):
                planner.options = replace(configured, reuse_images=reuse, split_prefixes=split)
                prepared = [backend.prepare(b) for b in batches]
                extra[f"model_only_items_per_s_{name}"] = count / seconds(prepared)
            planner.options = configured
            # The questions' pass as each prefix_passes runs it (backends.hf.folding), on the
            # same prepared batches; the configured one is left in force.
            passes = backend._passes
            attention = str(backend.model.config._attn_implementation)
            if passes is not None and "flash" not in attention:  # flash: copied only
                kept = passes.prefix_passes
                prepared = [backend.prepare(b) for b in batches]
                for chosen in ("copied", "folded"):
                    passes.prefix_passes = chosen
                    backend.score(prepared[0])  # warm-up in this mode
                    extra[f"model_only_items_per_s_prefix_passes_{chosen}"] = count / seconds(
                        prepared
                    )
                passes.prefix_passes = kept
        if device != "cpu":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        prepared = [backend.prepare(b) for b in batches]
        model_s = seconds(prepared)
        serial_s = seconds(batches, prepare_inline=True)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else None
        if args.profile_dir:
            folder = args.profile_dir / CONTEXT.get("variant", "")  # one folder per variant
            profile_batch(folder, protocol_name, backend, batches[0], len(batches[0]))
        record(
            stage=protocol_name,
            where="in-process",
            deterministic=deterministic,
            items=count,
            questions=len(questions),
            items_per_batch=per_batch,
            model_only_items_per_s=count / model_s,
            prepare_then_score_items_per_s=count / serial_s,
            prepare_share=round((serial_s - model_s) / serial_s, 3),
            shared_prefix_questions=sum(getattr(p, "shared_prefixes", 0) for p in prepared),
            images_encoded_once_for_two_prefixes=sum(
                getattr(p, "reused_images", 0) for p in prepared
            ),
            **extra,
            peak_gib=round(peak, 2) if peak else None,
        )
        summary[f"{protocol_name}_model_only_items_per_s"] = count / model_s
    backend.release()
    return summary


def profile_batch(folder: Path, protocol: str, backend: Any, batch: Any, count: int) -> None:
    """One batch's preparation and scoring under the torch profiler: kernels by kind, the top
    kernels (and a gzip Chrome trace), beside the host time preparation takes."""
    from profiling import kernel_table, print_table, profiled

    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    ready = backend.prepare(batch)
    prepare_s = time.perf_counter() - began
    with profiled(folder / f"judge-trace-{protocol}.json.gz") as prof:
        began = time.perf_counter()
        backend.score(ready)
    score_s = time.perf_counter() - began
    table = kernel_table(prof())
    record(
        stage=f"{protocol}-kernels",
        where="in-process",
        items=count,
        prepare_s=prepare_s,
        score_s_profiled=score_s,
        kernels=table,
    )
    print_table(f"judge {protocol}: one batch of {count} items", table)


async def through_service(
    args: argparse.Namespace, url: str, deterministic: bool
) -> dict[str, Any]:
    import httpx

    summary: dict[str, Any] = {}
    runs = [
        run
        for run in [
            ("single", "expected", args.items, args.items_per_request),
            ("viescore", "expected", args.items, args.items_per_request),
            ("single", "generate", args.generate_items, 1),
        ]
        if f"{run[0]}/{run[1]}" in args.runs
    ]
    async with httpx.AsyncClient(timeout=3600) as client:
        for protocol, mode, count, per_request in runs:
            pool = items(count, args.side)  # made once: PNG encoding is slow
            # Encoded once, before the clock starts: the client's JSON work is not the service's.
            payloads = [
                json.dumps(
                    {
                        "items": pool[i : i + per_request],
                        "protocol": protocol,
                        "mode": mode,
                        "max_new_tokens": args.generate_tokens,
                    }
                ).encode()
                for i in range(0, count, per_request)
            ]
            gate = asyncio.Semaphore(args.clients)
            before: dict[str, float] = {}
            latencies: list[float] = []

            async def send(
                payload: bytes,
                gate: asyncio.Semaphore = gate,
                latencies: list[float] = latencies,
            ) -> dict[str, Any]:
                async with gate:
                    sent = time.perf_counter()
                    response = await client.post(
                        f"{url}/v1/scores", content=payload, headers=JSON_HEADERS
                    )
                    latencies.append(time.perf_counter() - sent)
                response.raise_for_status()
                result: dict[str, Any] = response.json()
                return result

            progress(f"service {protocol}/{mode}: {len(payloads)} requests of {per_request}")
            await send(payloads[0])  # warm-up for this shape
            alone: list[dict[str, Any]] = []  # the noise floor's items, each in a batch of its own
            for item in pool[: args.noise_items if mode == "expected" else 0]:
                single = {**json.loads(payloads[0]), "items": [item]}
                answer = await send(json.dumps(single).encode(), latencies=[])
                alone += answer["results"]
            before = parse_metrics((await client.get(f"{url}/metrics")).text)
            began = time.perf_counter()
            answers = await asyncio.gather(*(send(p) for p in payloads))
            wall = time.perf_counter() - began
            after = parse_metrics((await client.get(f"{url}/metrics")).text)
            results = [r for a in answers for r in a["results"]]
            tokens = [q for r in results for q in r["questions"]]
            SCORES[(protocol, mode)] = item_scores(results)
            reference = item_scores(alone)
            batched = {k: v for k, v in SCORES[(protocol, mode)].items() if k in reference}
            noise = score_differences(batched, reference)
            record(
                stage=protocol,
                where="service",
                deterministic=deterministic,
                mode=mode,
                items=len(results),
                wall_s=wall,
                items_per_s=len(results) / wall,
                clients=args.clients,
                items_per_request=per_request,
                scored=sum(r["scored"] for r in results),
                answer_chars=sum(len(q.get("raw_text") or "") for q in tokens)
                / max(1, len(tokens)),
                backend_options=CONTEXT.get("backend_options", args.backend_options),
                batch_noise=noise,
                request_latency_s_mean=sum(latencies[1:]) / max(1, len(latencies) - 1),
                # Inside the workers, over this run: where the model's time went, and how the
                # batches spread over the replicas (one per device).
                **{
                    name: after.get(name, 0.0) - before.get(name, 0.0)
                    for name in (*WATCHED, *(n for n in after if per_replica(n)))
                },
            )
            summary[f"service_{protocol}_{mode}_items_per_s"] = len(results) / wall
        metrics = (await client.get(f"{url}/metrics")).text
    batches = [line for line in metrics.splitlines() if line.startswith("reward_batch_size_")]
    record(stage="batches", where="service", metrics=batches)
    return summary


SCORES: dict[tuple[str, str], dict[str, list[float | None]]] = {}  # the last service run's


def item_scores(results: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Each (item id, score name)'s score and expected-mode distribution, as one list."""
    return {
        f"{result['id']}/{question['name']}": [
            question["score"],
            *(question.get("distribution") or []),
        ]
        for result in results
        for question in result["questions"]
    }


def score_differences(
    mine: dict[str, list[float | None]], reference: dict[str, list[float | None]]
) -> dict[str, Any]:
    """How far scores (and distribution entries) moved between two runs over the same items."""
    scores, probabilities, unmatched = [], [], 0
    for key, values in mine.items():
        other = reference.get(key)
        if other is None or len(other) != len(values) or None in (values[0], other[0]):
            unmatched += 1
            continue
        pairs = [
            (float(a), float(b)) for a, b in zip(values, other, strict=True) if None not in (a, b)
        ]
        scores.append(abs(pairs[0][0] - pairs[0][1]))
        probabilities += [abs(a - b) for a, b in pairs[1:]]
    return {
        "compared": len(scores),
        "unmatched": unmatched,
        "max_abs_score_diff": max(scores, default=None),
        "mean_abs_score_diff": sum(scores) / len(scores) if scores else None,
        "max_abs_probability_diff": max(probabilities, default=None),
    }


WATCHED = (
    "reward_batch_size_count",
    "reward_batch_size_sum",
    'reward_worker_seconds_sum{stage="prepare"}',
    'reward_worker_seconds_sum{stage="model"}',
    'reward_model_waiting_seconds_total{reason="idle"}',
    'reward_model_waiting_seconds_total{reason="preparing"}',
    "reward_queue_wait_seconds_sum",
    "reward_queue_wait_seconds_count",
)


def per_replica(sample: str) -> bool:
    """A per-replica counter's sample (not its creation time)."""
    return sample.startswith("reward_replica_") and "_total{" in sample


def parse_metrics(text: str) -> dict[str, float]:
    """The Prometheus text format's samples, by their full name with labels."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def run_service(args: argparse.Namespace, deterministic: bool) -> dict[str, Any]:
    import httpx

    port = args.port
    env = dict(
        os.environ,
        REWARD_MODEL=args.model,
        REWARD_CACHE_DIR=str(args.cache_dir),
        REWARD_MAX_BATCH_IMAGES=str(args.batch_images),
        REWARD_BACKEND_OPTIONS=CONTEXT.get("backend_options", args.backend_options),
        REWARD_DETERMINISTIC=str(deterministic).lower(),
    )
    suffix = f".{CONTEXT['variant']}.service.log" if CONTEXT.get("variant") else ".service.log"
    log = open(args.out.with_suffix(suffix), "wb")  # noqa: SIM115
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "reward_service", "--port", str(port), "--log-level", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    progress("starting the reward service")
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("the reward service exited; see its log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        record(
            stage="load",
            where="service",
            deterministic=deterministic,
            seconds=time.perf_counter() - started,
        )
        summary = asyncio.run(through_service(args, url, deterministic))
        with httpx.Client(timeout=600) as client:
            for action in () if args.no_handover else ("release", "load"):
                began = time.perf_counter()
                answer = client.post(f"{url}/v1/model/{action}").json()
                record(
                    stage="handover",
                    where="service",
                    client_s=time.perf_counter() - began,
                    **answer,
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
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--batch-images", type=int, default=32, help="images per forward pass")
    parser.add_argument("--items", type=int, default=160, help="items per expected-mode run")
    parser.add_argument("--in-process-items", type=int, default=32)
    parser.add_argument("--items-per-request", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16, help="requests in flight")
    parser.add_argument("--generate-items", type=int, default=32)
    parser.add_argument("--generate-tokens", type=int, default=64)
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["single/expected", "viescore/expected", "single/generate"],
        choices=["single/expected", "viescore/expected", "single/generate"],
        help="which service runs (protocol/mode)",
    )
    parser.add_argument(
        "--backend-options", default="{}", help="REWARD_BACKEND_OPTIONS (JSON), both parts"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[],
        help=f"backend-option variants to run one after another: {', '.join(VARIANTS)}, or "
        'NAME={"json": "options"} (merged over --backend-options)',
    )
    parser.add_argument(
        "--noise-items",
        type=int,
        default=8,
        help="expected-mode runs: items also scored alone, for the batch_noise figure",
    )
    parser.add_argument("--port", type=int, default=8722, help="the service's port (loopback)")
    parser.add_argument("--no-handover", action="store_true", help="skip release/load timing")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["default", "deterministic"],
        default=["default"],
        help="judge modes to measure (deterministic: REWARD_DETERMINISTIC, issue 19)",
    )
    parser.add_argument(
        "--part", nargs="+", choices=["in-process", "service"], default=["in-process", "service"]
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="in-process part: profile one batch per protocol (kernel tables, traces) there",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editbench")
    parser.add_argument("--out", type=Path, default=Path("judge_bench.json"))
    parser.add_argument(
        "--stall-dump-s", type=float, default=0, help="dump every thread's stack after this long"
    )
    args = parser.parse_args()
    JOURNAL.append(args.out.with_suffix(".jsonl"))
    if args.stall_dump_s:
        faulthandler.dump_traceback_later(args.stall_dump_s, exit=False)

    for variant in args.variants:
        name, _, given = variant.partition("=")
        if not given and name not in VARIANTS:
            parser.error(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}, or NAME=JSON")
    names = [v.partition("=")[0] for v in args.variants]
    if len(set(names)) != len(names):
        parser.error("each variant needs a name of its own")
    summary: dict[str, Any] = {}
    for mode in sorted(args.modes, key=lambda m: m == "deterministic"):  # default first
        deterministic = mode == "deterministic"
        reference: dict[tuple[str, str], dict[str, list[float | None]]] = {}
        for variant in args.variants or [None]:
            figures: dict[str, Any] = {}
            name = variant.partition("=")[0] if variant else ""
            if variant:
                CONTEXT.update(variant=name, backend_options=variant_options(args, variant))
                progress(f"variant {name}: REWARD_BACKEND_OPTIONS={CONTEXT['backend_options']}")
            if "in-process" in args.part:
                figures.update(in_process(args, deterministic))
            if "service" in args.part:
                SCORES.clear()
                figures.update(run_service(args, deterministic))
                for protocol in ("single", "viescore"):
                    alone = figures.get(f"{protocol}_model_only_items_per_s")
                    served = figures.get(f"service_{protocol}_expected_items_per_s")
                    if alone and served:
                        overhead = round(100 * (1 - served / alone), 2)
                        figures[f"{protocol}_service_overhead_pct"] = overhead
                if reference:  # the first variant's scores, same items, same order of requests
                    for (protocol, how), scores in SCORES.items():
                        if (protocol, how) in reference:
                            record(
                                stage="scores",
                                protocol=protocol,
                                mode=how,
                                against=args.variants[0].partition("=")[0],
                                **score_differences(scores, reference[(protocol, how)]),
                            )
                else:
                    reference = dict(SCORES)
            prefix = "deterministic_" if deterministic and len(args.modes) > 1 else ""
            prefix += f"{name}_" if len(args.variants) > 1 else ""
            summary.update({prefix + key: value for key, value in figures.items()})
        CONTEXT.clear()
        if len(args.variants) > 1:
            first = names[0]
            for key in [
                k for k in summary if k.startswith(f"{first}_") and k.endswith("_items_per_s")
            ]:
                base = summary[key]
                for other in names[1:]:
                    value = summary.get(other + key[len(first) :])
                    if base and value:
                        summary[f"{other}_speedup_{key[len(first) + 1 :]}"] = round(value / base, 3)
    if len(args.modes) > 1:
        for name in list(summary):
            if not name.startswith("deterministic_") and name.endswith("_items_per_s"):
                default, det = summary[name], summary.get("deterministic_" + name)
                if default and det:
                    summary[f"deterministic_cost_pct_{name}"] = round(100 * (1 - det / default), 2)
    record(stage="summary", **summary)
    args.out.write_text(json.dumps({"results": RESULTS, "summary": summary}, indent=1))
    print("\n".join(f"{k:>40}: {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
