"""Fake editing backends, for tests about queueing, HTTP and faults (never about models).

Selected like any custom backend: ``EditorSettings(backend="tests.support.fake_editors:Class")``.
Options come from ``backend_options``: ``load_delay_s``, ``edit_delay_s`` (an edit's time,
whatever its steps), ``step_delay_s`` (added per step: a 2-step job is quick beside a 40-step
one), ``fail_load``, ``refuse_load`` (refused for its configuration: UnsupportedOption),
``refuse_load_once`` (a file's path: the first load to create it is refused, every other fails),
``start_log`` (a file each edit appends its instruction to as it starts), ``edit_gate`` (the
path of a file each edit waits for, up to 60 s, after it started: a test holds the worker busy
until it creates the file), ``edit_gate_after`` (how many of a worker's edits pass before the
gate applies; default 0).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from PIL import ImageOps

from editor_service.backends.base import (
    BackendSpec,
    DeviceOutOfMemory,
    EditJob,
    EditOutput,
    JobCancelled,
    LoadedModel,
    RGBImage,
)
from editor_service.backends.speed_modes import UnsupportedOption


class MirrorEditBackend:
    """Mirrors the image after a configurable delay; honours cancellation between 'steps'."""

    def __init__(self, spec: BackendSpec) -> None:
        self.options = spec.options
        self.model = spec.model
        self.edits_started = 0

    def load(self, device: str) -> LoadedModel:
        time.sleep(float(self.options.get("load_delay_s", 0)))
        if self.options.get("fail_load"):
            raise RuntimeError("configured to fail while loading")
        if self.options.get("refuse_load"):
            raise UnsupportedOption(f"transformer_fp8 cannot run on {device} (refuse_load)")
        if once := self.options.get("refuse_load_once"):  # one worker refused, the rest fail
            try:
                os.close(os.open(str(once), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                raise RuntimeError("configured to fail while loading (refuse_load_once)") from None
            raise UnsupportedOption(f"transformer_fp8 cannot run on {device} (refuse_load_once)")
        return LoadedModel(
            id=f"fake:{self.model}",
            source="local",
            revision="fake",
            model_class=type(self).__name__,
            dtype="none",
            meaningful=False,
            details={"device": device, "pid": os.getpid()},
        )

    def edit(self, job: EditJob, should_stop: Callable[[], bool]) -> EditOutput:
        if job.instruction == "oom":
            raise DeviceOutOfMemory("fake out of memory")
        if job.instruction == "crash":
            raise RuntimeError("fake crash inside the model")
        if log := self.options.get("start_log"):  # the order jobs start in, for fairness tests
            with open(log, "a") as starts:
                starts.write(job.instruction + "\n")
        self.edits_started += 1
        gate = self.options.get("edit_gate")
        if gate and self.edits_started > int(self.options.get("edit_gate_after", 0)):
            deadline = time.monotonic() + 60
            while not os.path.exists(gate) and time.monotonic() < deadline:
                if should_stop():
                    raise JobCancelled(job.job_id)
                time.sleep(0.01)
        steps = max(1, job.num_inference_steps or 50)  # None: the family default (Qwen: 50)
        per_step = float(self.options.get("step_delay_s", 0))
        delay = float(self.options.get("edit_delay_s", 0)) + per_step * steps
        for _ in range(steps):
            time.sleep(delay / steps)
            if should_stop():
                raise JobCancelled(job.job_id)
        img = ImageOps.mirror(job.image.to_pil())
        if job.width and job.height:
            img = img.resize((job.width, job.height))
        return EditOutput(RGBImage.from_pil(img), pipeline_s=delay)

    def release(self) -> None:
        pass
