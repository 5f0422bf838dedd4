"""A pipeline component whose weights wait in host memory between its uses (issue 30: memory).

Qwen-Image-Edit's text encoder (Qwen2.5-VL-7B, 15.4 GiB in bf16) runs once or twice at the start of
an edit and then sits idle on the GPU beside the transformer (38 GiB) for the whole denoising loop:
with it resident, an edit peaks at ~58 GiB. Parking the whole encoder while the transformer runs
is not enough: the peak then comes at the encoding itself, with both models on the GPU (55.8 GiB
measured on an H100). So each of the encoder's linear layers (~all its weights) is a
``ParkedModule``: a pinned host copy of its weights, brought to the device by its forward pre-hook
and dropped again by its forward hook. Nothing is copied back: the weights do not change. The
price is the copy of the encoder's weights at every edit (measured in docs/PERFORMANCE.md); the
images are unchanged (the same weights, the same kernels).
"""

from __future__ import annotations

from typing import Any

import torch


class ParkedModule:
    """A module whose own weights wait in (pinned) host memory: its forward pre-hook brings them to
    the device, and with ``between_calls`` its forward hook drops the device copy again."""

    def __init__(self, module: torch.nn.Module, device: str, *, between_calls: bool) -> None:
        self.module = module
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        # Shared tensors appear once (parameters() and buffers() drop duplicates): one host copy.
        self.tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
        for tensor in [*module.parameters(), *module.buffers()]:
            host = tensor.detach().to("cpu", copy=True)
            self.tensors.append((tensor, host.pin_memory() if pin else host))
        self.on_device = True
        self.arrivals = 0  # how often the weights were brought to the device
        self.park()
        self._handles = [module.register_forward_pre_hook(self._arrive)]
        if between_calls:
            self._handles.append(module.register_forward_hook(self.park))

    def _arrive(self, *_: Any) -> None:
        if self.on_device:
            return
        with torch.inference_mode(False), torch.no_grad():
            for tensor, host in self.tensors:
                tensor.data = host.to(self.device, non_blocking=True, copy=True)
        self.on_device = True
        self.arrivals += 1

    def park(self, *_: Any) -> None:
        """Drop the device copy (the host copy stays); the next forward brings it back. The
        caching allocator reuses the freed block only for work queued after the kernels that
        read it (one stream), so this is safe right after a forward."""
        if not self.on_device:
            return
        for tensor, host in self.tensors:
            tensor.data = host
        self.on_device = False

    def remove(self) -> None:
        """Back on the device for good, hooks removed."""
        self._arrive()
        for handle in self._handles:
            handle.remove()


def park_text_encoder(
    pipe: Any, device: str, encoders: tuple[str, ...] = ("text_encoder",)
) -> list[ParkedModule]:
    """Park each linear layer of the pipeline's text encoders (``encoders``: component names, the
    family's ``text_encoders``; FLUX.1 Kontext has CLIP and T5) between its own calls: ~all of
    their weights (norms, embeddings, convolutions and buffers stay resident, as does a linear
    layer whose weight another module shares). One layer's weights are on the device at a time,
    so the peak is the transformer plus the text encoders' small rest, not the whole models."""
    parked: list[ParkedModule] = []
    for name in encoders:
        encoder = getattr(pipe, name)
        shared = {
            id(p)
            for module in encoder.modules()
            if not isinstance(module, torch.nn.Linear)
            for p in module.parameters(recurse=False)
        }
        parked += [
            ParkedModule(module, device, between_calls=True)
            for module in encoder.modules()
            if isinstance(module, torch.nn.Linear)
            and not any(id(p) in shared for p in module.parameters(recurse=False))
        ]
    return parked
