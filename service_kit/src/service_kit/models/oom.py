"""Out of device memory, as a worker process sees it: recognised without importing torch.

A backend should raise its service's DeviceOutOfMemory, but one that lets ``torch.OutOfMemoryError``
(the same class as ``torch.cuda.OutOfMemoryError``) escape must not turn a retryable "too big
for the GPU right now" into a generic 500. The worker answers the job 507 ``out_of_memory`` and
frees the allocator's cache once the exception (whose traceback holds the failed pass's
tensors) is gone, then keeps serving.
"""

from __future__ import annotations

import gc
import logging
import sys

logger = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (or a subclass), matched by name."""
    return any(
        cls.__name__ == "OutOfMemoryError" and cls.__module__.split(".")[0] == "torch"
        for cls in type(exc).__mro__
    )


def free_device_memory() -> None:
    """Drop garbage and return cached blocks to the device; a no-op where torch is not in use."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:
        logger.warning("could not empty the CUDA cache", exc_info=True)
