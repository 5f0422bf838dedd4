"""How much a preparing thread slows the judge's model thread, in one worker process.

The service's judge worker prepares the next batch in one thread while the model runs the
current one in another. This times the model alone on prepared batches, then again while a
second thread prepares the next batch as each one starts (as the service does), under a few
interpreter switch intervals and with the preparation on its own CUDA stream:

    python bench/judge_contention.py --protocol single --out contention.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_bench import JOURNAL, RESULTS, items, progress, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="random-full")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--protocol", default="single", choices=["single", "viescore"])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-images", type=int, default=32)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.005, 0.001, 0.0002])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editbench")
    parser.add_argument("--out", type=Path, default=Path("judge_contention.json"))
    args = parser.parse_args()
    JOURNAL.append(args.out.with_suffix(".jsonl"))

    import torch

    from reward_service.backends.base import BackendSpec
    from reward_service.backends.transformers_backend import TransformersJudgeBackend
    from reward_service.messages import decode_item
    from reward_service.protocols import ProtocolRegistry
    from reward_service.scorer import build_items, decode_items
    from shared_schemas import ScoreRequest

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    backend = TransformersJudgeBackend(
        BackendSpec("transformers", args.model, None, "auto", str(args.cache_dir))
    )
    backend.load(device)
    protocol = ProtocolRegistry.load(None).get(args.protocol)
    pool = items(args.items, args.side)
    by_item = []
    for start in range(0, len(pool), 64):  # a request holds at most 64 items
        request = ScoreRequest.model_validate(
            {"items": pool[start : start + 64], "protocol": args.protocol}
        )
        images = decode_items(request.items, max_pixels=2**40)
        by_item += [decode_item(i) for i in build_items(protocol, request, images, "bench")]
    per_batch = max(1, args.batch_images // protocol.spec.images_per_item)
    batches = [by_item[i : i + per_batch] for i in range(0, len(by_item), per_batch)]
    backend.score(backend.prepare(batches[0]))  # warm-up

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    def timed(prepared: list[Any], started: threading.Semaphore | None = None) -> float:
        sync()
        began = time.perf_counter()
        for batch in prepared:
            if started is not None:
                started.release()
            backend.score(batch)
        sync()
        return args.items / (time.perf_counter() - began)

    def contended(prepared: list[Any], side_stream: bool) -> tuple[float, int]:
        """As in the service: as each batch starts on the model, the next one is prepared."""
        stop = threading.Event()
        started = threading.Semaphore(0)
        made = [0]

        def prepare_next() -> None:
            stream = torch.cuda.Stream() if side_stream and device != "cpu" else None
            while not stop.is_set():
                if not started.acquire(timeout=0.05):
                    continue
                batch = batches[made[0] % len(batches)]
                if stream is not None:
                    with torch.cuda.stream(stream):
                        backend.prepare(batch)
                    stream.synchronize()
                else:
                    backend.prepare(batch)
                made[0] += 1

        thread = threading.Thread(target=prepare_next, daemon=True)
        thread.start()
        try:
            return timed(prepared, started), made[0]
        finally:
            stop.set()
            thread.join()

    default = sys.getswitchinterval()
    for interval in args.intervals:
        sys.setswitchinterval(interval)
        prepared = [backend.prepare(b) for b in batches]
        alone = timed(prepared)
        progress(f"interval {interval}: alone {alone:.2f} items/s")
        busy, made = contended(prepared, side_stream=False)
        side, made_side = contended(prepared, side_stream=True)
        record(
            stage="contention",
            protocol=args.protocol,
            switch_interval_s=interval,
            model_alone_items_per_s=alone,
            model_with_preparing_thread_items_per_s=busy,
            batches_prepared_meanwhile=made,
            model_with_preparing_thread_on_side_stream_items_per_s=side,
            batches_prepared_meanwhile_side_stream=made_side,
            slowdown_pct=round(100 * (1 - busy / alone), 1),
            slowdown_side_stream_pct=round(100 * (1 - side / alone), 1),
        )
    sys.setswitchinterval(default)
    args.out.write_text(json.dumps({"results": RESULTS}, indent=1))


if __name__ == "__main__":
    main()
