"""A pipeline component whose weights wait in host memory between its uses (issue 30: memory).

Qwen-Image-Edit's text encoder (Qwen2.5-VL-7B, 15.4 GiB in bf16) runs once or twice at the start of
an edit and then sits idle on the GPU beside the transformer (38 GiB) for the whole denoising loop:
with it resident, an edit peaks at ~58 GiB. ``ParkedModule`` keeps a pinned host copy of the
module's weights; the module's forward pre-hook brings them to the device (one host-to-device
copy), and ``park`` (called when the transformer starts) drops the device copy again. Nothing is
copied back: the weights do not change. The price is that copy at every edit (measured in
docs/PERFORMANCE.md); the images are unchanged (the same weights, the same kernels).
"""

from __future__ import annotations

from typing import Any

import torch


class ParkedModule:
    def __init__(self, module: torch.nn.Module, device: str) -> None:
        self.module = module
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        # Shared tensors appear once (named_* drop duplicates): one host copy each.
        self.tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
        for tensor in [*module.parameters(), *module.buffers()]:
            host = tensor.detach().to("cpu", copy=True)
            self.tensors.append((tensor, host.pin_memory() if pin else host))
        self.on_device = True
        self.arrivals = 0  # how often the weights were brought to the device
        self.park()
        self._handle = module.register_forward_pre_hook(self._arrive)

    def _arrive(self, *_: Any) -> None:
        if self.on_device:
            return
        with torch.inference_mode(False), torch.no_grad():
            for tensor, host in self.tensors:
                tensor.data = host.to(self.device, non_blocking=True, copy=True)
        self.on_device = True
        self.arrivals += 1

    def park(self, *_: Any) -> None:
        """Drop the device copy (the host copy stays); the next forward brings it back."""
        if not self.on_device:
            return
        for tensor, host in self.tensors:
            tensor.data = host
        self.on_device = False

    def remove(self) -> None:
        """Back on the device for good, hooks removed."""
        self._arrive()
        self._handle.remove()


def park_text_encoder(pipe: Any, device: str) -> ParkedModule:
    """Park ``pipe.text_encoder`` whenever ``pipe.transformer`` starts a forward pass."""
    parked = ParkedModule(pipe.text_encoder, device)
    pipe.transformer.register_forward_pre_hook(parked.park)
    return parked
