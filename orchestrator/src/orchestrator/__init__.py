"""editbench's orchestrator: the ``editbench`` CLI that runs image-editing benchmarks end to end.

It talks to the editor and reward services over HTTP only (shared_schemas + httpx): no torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("editbench-orchestrator")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
