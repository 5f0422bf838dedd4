"""Fake backends for fault tests: one input runs long, one runs out of device memory.

They extend the fakes in fake_editors / fake_judges and are selected the same way
(``EDITOR_BACKEND=tests.support.fault_backends:FaultEditor``). What the instruction says
(the editor's whole instruction; a word anywhere in a judge item's instruction):

- ``slow`` (editor) / ``fake-slow`` (judge): the job, or the batch holding it, takes ``slow_s``
  seconds (option, default 5), so a test can act while it runs; every other job runs at once.
  With the option ``slow_gate`` (a file's path) it ends as soon as that file exists: a test
  holds it for as long as its steps take and then lets it finish (``slow_s`` is then a bound).
- ``torch-oom``: the backend raises torch's own ``OutOfMemoryError``, as a backend that does not
  translate it would: the worker must still answer 507 and keep serving.
- ``endpoint-refused`` / ``endpoint-down`` (judge): the backend fails the batch as a remote judge
  endpoint that refuses us, or stays unavailable, does (``EndpointError``).

The judge's fake also writes the options' ``journal`` (pid per load and batch), which tells a
test which process served a batch. ``CudaEditor`` runs out of a real GPU's memory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

from editor_service.backends.base import EditJob, EditOutput, JobCancelled, LoadedModel
from reward_service.backends.base import EndpointError, JudgeQuestion, QuestionOutput
from tests.support.fake_editors import MirrorEditBackend
from tests.support.fake_judges import FakeJudge


def raise_torch_out_of_memory() -> None:
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (fake)")


def _gate_open(options: dict[str, object]) -> bool:
    gate = options.get("slow_gate")
    return bool(gate) and os.path.exists(str(gate))


class FaultEditor(MirrorEditBackend):
    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        if job.instruction == "torch-oom":
            raise_torch_out_of_memory()
        if job.instruction == "slow":
            deadline = time.monotonic() + float(self.options.get("slow_s", 5))
            while time.monotonic() < deadline and not _gate_open(self.options):
                time.sleep(0.05)
                if should_stop():
                    raise JobCancelled(job.job_id)
        return super().edit(job, should_stop)


def _texts(batch: Sequence[JudgeQuestion]) -> list[str]:
    return [" ".join(p for p in q.content if isinstance(p, str)) for q in batch]


class FaultJudge(FakeJudge):
    def _score(self, prepared: object) -> Sequence[QuestionOutput]:
        assert isinstance(prepared, list)
        texts = _texts(prepared)
        if any("torch-oom" in t for t in texts):
            raise_torch_out_of_memory()
        if any("endpoint-refused" in t for t in texts):
            raise EndpointError("the judge endpoint refused our credentials (401)", retryable=False)
        if any("endpoint-down" in t for t in texts):
            raise EndpointError("the judge endpoint answered 503 after 5 tries", retryable=True)
        if any("fake-slow" in t for t in texts):
            deadline = time.monotonic() + float(self.options.get("slow_s", 5))
            while time.monotonic() < deadline and not _gate_open(self.options):
                time.sleep(0.05)
        return super()._score(prepared)


class CudaEditor(MirrorEditBackend):
    """For GPU machines: ``cuda-oom`` takes 2 GiB for an intermediate, then asks for more
    memory than the device has (a real ``torch.OutOfMemoryError``). Every edit first writes the
    memory its process's allocator holds to the options' ``journal``, one JSON line each."""

    def load(self, device: str) -> LoadedModel:
        import torch

        self.device = device
        torch.zeros(1, device=device)  # CUDA initialised, as a model load would
        return super().load(device)

    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        import torch

        entry = {"pid": os.getpid(), "reserved": torch.cuda.memory_reserved(self.device)}
        with open(str(self.options["journal"]), "a") as journal:
            journal.write(json.dumps(entry) + "\n")
        if job.instruction == "cuda-oom":
            intermediate = torch.empty(2 * 2**30, dtype=torch.uint8, device=self.device)
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.empty(2 * total, dtype=torch.uint8, device=self.device)
            del intermediate  # never reached
        return super().edit(job, should_stop)
