"""editbench's editor service: Qwen-Image-Edit over HTTP, one worker process per device."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("editbench-editor")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
