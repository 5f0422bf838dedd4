"""editbench's reward service: a Qwen3-VL judge over HTTP, with dynamic micro-batching."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("editbench-reward")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
