"""Where a judge batch's preparation time goes, at the real shapes, without the model.

The judge worker prepares each batch (chat template, the Qwen3-VL image processor, tokens) on a
thread of its own while the model runs the previous one. This builds the processor the
``random-full`` source uses (the real image-processor settings, the locally trained Qwen-style
tokenizer: no hub, no weights), turns --items 1024x1024 PNG items into the worker's batches with
the service's own code, and times, per batch of --batch-images images:

- ``api_decode``: PNG/JPEG bytes to pixels in the API process (for scale: not the worker's time);
  ``pipe``: pickling the batch and unpickling it (what crossing to the worker costs);
- ``worker``: one batch prepared as the worker does it (``ScoreBatch.decoded()``, then the
  transformers backend's ``Planner.plan``), split into ``to_images`` (the pipe's pixels to what
  the image processor takes: PIL images, or tensors viewing the bytes), ``render`` (chat templates),
  ``image_processor`` (transformers' Qwen2VLImageProcessor: to tensor, resize, normalise,
  patchify), ``tokenizer`` and the rest (text replacements, grouping, checks);
- ``threads``: batches per second with 1..N preparing threads (``--threads``), each with its own
  processor, batch order kept;
- with ``--busy`` on a CUDA device, all of it again while another thread keeps the GPU's default
  stream busy with matrix products, as the model thread does (a stand-in for the model), and how
  fast that thread ran meanwhile (``busy_bursts_per_s`` against ``alone_bursts_per_s``).

Each variant (``--variants``: ``images=pil|tensor``, ``device=cpu|cuda``, ``stream=default|side``)
is one JSON line per figure, journaled to ``<out>.jsonl`` as it goes:

    python bench/judge_prepare.py --out prepare.json                    # CPU: what it can
    python bench/judge_prepare.py --busy --threads 1 2 4 --out prepare-gpu.json   # on the GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_bench import JOURNAL, RESULTS, items, progress, record

# What each named variant sets (PrepareOptions fields); "device" is resolved against the machine.
VARIANTS: dict[str, dict[str, str]] = {
    "pil-cpu": {"images": "pil", "device": "cpu", "stream": "default"},
    "tensor-cpu": {"images": "tensor", "device": "cpu", "stream": "default"},
    "pil-cuda": {"images": "pil", "device": "cuda", "stream": "default"},
    "tensor-cuda": {"images": "tensor", "device": "cuda", "stream": "default"},
    "tensor-cuda-side": {"images": "tensor", "device": "cuda", "stream": "side"},
    "pil-cuda-side": {"images": "pil", "device": "cuda", "stream": "side"},
}


@contextlib.contextmanager
def timing(target: Any, name: str, totals: dict[str, float], label: str) -> Iterator[None]:
    """Add the time of every call of ``target.name`` (in any thread) to ``totals[label]``."""
    original = getattr(target, name)
    lock = threading.Lock()

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - began

    setattr(target, name, timed)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError):
            delattr(target, name)  # the instance attribute: the class's method shows again
        if getattr(target, name) is timed:
            setattr(target, name, original)


class Busy:
    """A stand-in for the model thread: bursts of bf16 matrix products on the default stream,
    each burst read back (a synchronisation, as reading the logits is)."""

    def __init__(self, device: str, side: int = 8192, burst: int = 100) -> None:
        import torch

        self.a = torch.randn(side, side, device=device, dtype=torch.bfloat16)
        self.burst = burst
        self.stop = threading.Event()
        self.bursts = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self.stop.is_set():
            x = self.a
            for _ in range(self.burst):
                x = (x @ self.a) * 1e-4
            float(x[0, 0])
            self.bursts += 1
        torch.cuda.synchronize()

    def __enter__(self) -> Busy:
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--protocol", default="single", choices=["single", "viescore"])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes over the batches")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=None, help="names from VARIANTS")
    parser.add_argument("--busy", action="store_true", help="CUDA: keep the GPU busy meanwhile")
    parser.add_argument("--out", type=Path, default=Path("judge_prepare.json"))
    args = parser.parse_args()
    JOURNAL.append(args.out.with_suffix(".jsonl"))

    import torch

    from reward_service.messages import ScoreBatch
    from reward_service.protocols import ProtocolRegistry
    from reward_service.scorer import build_items, decode_items
    from shared_schemas import ScoreRequest
    from tiny_models.qwen3_vl import build_processor
    from tiny_models.tokenizer import build_qwen_tokenizer

    cuda = torch.cuda.is_available()
    names = args.variants or [n for n in VARIANTS if cuda or "cuda" not in n]
    began = time.perf_counter()
    tokenizer = build_qwen_tokenizer(qwen3=True)
    processor = build_processor(tokenizer)
    processor.tokenizer.padding_side = "left"
    record(
        stage="setup",
        processor=type(processor.image_processor).__name__,
        image_processor_backend=getattr(processor.image_processor, "backend", None),
        build_s=round(time.perf_counter() - began, 2),
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name() if cuda else None,
        cpu_threads=torch.get_num_threads(),
    )
    digit_ids = [int(tokenizer.convert_tokens_to_ids(str(d))) for d in range(10)]
    protocol = ProtocolRegistry.load(None).get(args.protocol)
    per_batch = max(1, args.batch_images // protocol.spec.images_per_item)
    pool = items(args.items, args.side)
    batches: list[ScoreBatch] = []
    decode_s = 0.0
    for start in range(0, len(pool), per_batch):
        request = ScoreRequest.model_validate(
            {"items": pool[start : start + per_batch], "protocol": args.protocol}
        )
        t0 = time.perf_counter()
        images = decode_items(request.items, max_pixels=2**40)
        decode_s += time.perf_counter() - t0
        judge_items = build_items(protocol, request, images, "bench")
        keys = tuple(range(len(judge_items)))
        batches.append(ScoreBatch(len(batches), tuple(judge_items), keys))
    t0 = time.perf_counter()
    sizes = [len(pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)) for b in batches]
    dumped = time.perf_counter() - t0
    blobs = [pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL) for b in batches]
    t0 = time.perf_counter()
    for blob in blobs:
        pickle.loads(blob)
    loaded = time.perf_counter() - t0
    del blobs
    record(
        stage="api_and_pipe",
        protocol=args.protocol,
        batches=len(batches),
        items_per_batch=per_batch,
        api_decode_s_per_batch=decode_s / len(batches),
        pickle_s_per_batch=dumped / len(batches),
        unpickle_s_per_batch=loaded / len(batches),
        batch_mb=round(statistics.mean(sizes) / 1e6, 1),
    )

    if args.busy and cuda:
        with Busy("cuda:0") as load:
            time.sleep(3)
            record(stage="busy", variant=None, alone_bursts_per_s=round(load.bursts / 3.5, 2))
    for name in names:
        chosen = VARIANTS[name]
        device = "cuda:0" if chosen["device"] == "cuda" else "cpu"
        if device != "cpu" and not cuda:
            progress(f"{name}: no CUDA device here; skipped")
            continue
        for busy in [False, True] if (args.busy and device != "cpu") else [False]:
            with Busy(device) if busy else contextlib.nullcontext() as load:
                progress(f"{name}: busy GPU {busy}")
                began, bursts = time.perf_counter(), getattr(load, "bursts", 0)
                measure(args, name, chosen, busy, device, processor, digit_ids, batches)
                if load is not None:
                    rate = (load.bursts - bursts) / (time.perf_counter() - began)
                    record(stage="busy", variant=name, busy_bursts_per_s=round(rate, 2))
    args.out.write_text(json.dumps({"results": RESULTS}, indent=1))


class Preparing:
    """One preparing thread's planner (its own processor copy: a fast tokenizer must not be
    called from two threads at once) and, on CUDA with stream=side, its own stream."""

    def __init__(
        self, processor: Any, device: str, digit_ids: list[int], chosen: dict[str, str]
    ) -> None:
        import copy

        from reward_service.backends.hf.planning import Planner, PlanOptions
        from reward_service.backends.hf.prepare_stream import PrepareStreams, stream_choice

        self.processor = copy.deepcopy(processor)
        self.planner = Planner(
            self.processor,
            device,
            digit_ids,
            PlanOptions(encode_images_apart=True, preprocess_on_device=device != "cpu"),
        )
        self.images = chosen["images"]
        # The backend's own streams (reward_service.backends.hf.prepare_stream).
        self.streams = PrepareStreams(device, stream_choice({"prepare_stream": chosen["stream"]}))

    def items_of(self, batch: Any) -> Any:
        if self.images == "pil":
            return batch.decoded()
        from reward_service.backends.base import JudgeItem

        return [
            JudgeItem(tuple(_tensor(i) for i in item.images), item.questions)
            for item in batch.items
        ]

    def prepare(self, batch: Any) -> Any:
        items = self.items_of(batch)
        with self.streams.preparing():
            return self.planner.plan(items)


def _tensor(image: Any) -> Any:
    """An RGBImage's pixels as a (3, H, W) uint8 tensor, without a copy until the permute."""
    import torch

    flat = torch.frombuffer(bytearray(image.pixels), dtype=torch.uint8)
    return flat.view(image.height, image.width, 3).permute(2, 0, 1)


def measure(
    args: argparse.Namespace,
    name: str,
    chosen: dict[str, str],
    busy: bool,
    device: str,
    processor: Any,
    digit_ids: list[int],
    batches: list[Any],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fields = {"variant": name, **chosen, "busy_gpu": busy, "protocol": args.protocol}
    one = Preparing(processor, device, digit_ids, chosen)
    one.prepare(batches[0])  # warm-up (caches, CUDA context, kernels)
    totals: dict[str, float] = {}
    with (
        timing(one, "items_of", totals, "to_images"),
        timing(one.planner, "render", totals, "render"),
        timing(one.processor.image_processor, "preprocess", totals, "image_processor"),
        timing(one.processor.tokenizer, "_encode_plus", totals, "tokenizer"),
    ):
        walls = []
        for _ in range(args.rounds):
            for batch in batches:
                t0 = time.perf_counter()
                one.prepare(batch)
                walls.append(time.perf_counter() - t0)
    count = len(walls)
    parts = {f"{k}_s": round(v / count, 4) for k, v in totals.items()}
    rest = statistics.mean(walls) - sum(totals.values()) / count
    record(
        stage="worker",
        **fields,
        batch_s_mean=round(statistics.mean(walls), 4),
        batch_s_median=round(statistics.median(walls), 4),
        **parts,
        other_s=round(rest, 4),
        batches_timed=count,
    )
    for threads in args.threads:
        local = threading.local()
        work = batches * args.rounds

        def prepare(batch: Any, local: threading.local = local) -> Any:
            if not hasattr(local, "one"):
                local.one = Preparing(processor, device, digit_ids, chosen)
            return local.one.prepare(batch)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(prepare, batches[:threads]))  # each thread's warm-up
            t0 = time.perf_counter()
            results = list(pool.map(prepare, work))  # in order, as the worker needs
            wall = time.perf_counter() - t0
        assert len(results) == len(work)
        record(
            stage="threads",
            **fields,
            threads=threads,
            batches=len(work),
            batches_per_s=round(len(work) / wall, 3),
            items_per_s=round(len(work) * len(batches[0].items) / wall, 2),
        )


if __name__ == "__main__":
    main()
