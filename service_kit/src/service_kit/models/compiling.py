"""Whether torch.compile is on by default: on CUDA devices where Triton can build its launchers.

Triton (which torch.compile's inductor generates GPU kernels for) compiles a small C launcher for
its kernels at run time, with the compiler it finds as triton/runtime/build.py `_find_compiler`
does (triton 3.8.0): `CC` if set, else `gcc`, else `clang` on PATH. Without one the first compiled
call fails ("Failed to find C compiler"), as it does in images built on python:*-slim or CUDA
runtime images (pytorch/pytorch PR 170235 installs gcc in PyTorch's own runtime images for this).
So the services compile by default only where a compiler is found, and say why when not.
"""

from __future__ import annotations

import logging
import os
import shutil

logger = logging.getLogger(__name__)


def c_compiler() -> str | None:
    """The C compiler Triton would use here (as its build does: CC, then gcc, then clang)."""
    chosen = os.environ.get("CC")
    if chosen:
        return chosen
    return shutil.which("gcc") or shutil.which("clang")


def compile_by_default(device: str, *, deterministic: bool = False) -> bool:
    """The compile option's default: on for CUDA devices with a C compiler for Triton, off on the
    CPU (minutes of compiling for little gain), in deterministic mode and without a compiler (the
    last with a warning naming the fix)."""
    if not device.startswith("cuda") or deterministic:
        return False
    if c_compiler() is None:
        logger.warning(
            "torch.compile is off by default on %s: no C compiler for Triton's launchers "
            "(install gcc, or set CC; setting the compile option on fails at load without one)",
            device,
        )
        return False
    return True
