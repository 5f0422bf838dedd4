"""editbench's editor service: instruction-based image editing over HTTP, one worker process per
device, for every family in ``editor_service.families.registry`` (Qwen-Image-Edit, FLUX.1 Kontext,
LongCat-Image-Edit), chosen by the loaded pipeline's class."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("editbench-editor")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
