"""Fake backends for fault tests: one input runs long, one runs out of device memory.

They extend the fakes in fake_editors / fake_judges and are selected the same way
(``EDITOR_BACKEND=tests.support.fault_backends:FaultEditor``). What the instruction says
(the editor's whole instruction; a word anywhere in a judge item's instruction):

- ``slow`` (editor) / ``fake-slow`` (judge): the job, or the batch holding it, takes ``slow_s``
  seconds (option, default 5), so a test can act while it runs; every other job runs at once.
- ``torch-oom``: the backend raises torch's own ``OutOfMemoryError``, as a backend that does not
  translate it would: the worker must still answer 507 and keep serving.

The judge's fake also writes the options' ``journal`` (pid per load and batch), which tells a
test which process served a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from editor_service.backends.base import EditJob, EditOutput, JobCancelled
from reward_service.backends.base import JudgeQuestion, QuestionOutput
from tests.support.fake_editors import MirrorEditBackend
from tests.support.fake_judges import FakeJudge


def raise_torch_out_of_memory() -> None:
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (fake)")


class FaultEditor(MirrorEditBackend):
    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        if job.instruction == "torch-oom":
            raise_torch_out_of_memory()
        if job.instruction == "slow":
            deadline = time.monotonic() + float(self.options.get("slow_s", 5))
            while time.monotonic() < deadline:
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
        if any("fake-slow" in t for t in texts):
            time.sleep(float(self.options.get("slow_s", 5)))
        return super()._score(prepared)
