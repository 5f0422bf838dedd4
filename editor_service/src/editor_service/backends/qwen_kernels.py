"""Qwen-Image's joint attention, written for the compiler and the attention kernel (issue 30).

diffusers' ``QwenDoubleStreamAttnProcessor2_0`` applies RoPE through complex tensors
(``view_as_complex`` / ``view_as_real``), concatenates text and image q/k/v as [B, S, H, D] and
hands the attention kernel a permuted (strided) view of them; the kernel then reads q/k/v with a
stride of H*D between tokens and writes its output the same way. At the edit's shape (24 x 128,
~9,600 tokens) cuDNN's attention ran 2.05 ms a call inside the compiled block against 1.65 ms on
contiguous [B, H, S, D] inputs (H100, docs/PERFORMANCE.md).

``QwenJointAttention`` computes the same function with:

- the qk RMSNorm and RoPE in real float32 arithmetic (the complex product written out: what the
  complex multiply computes), so torch.compile fuses norm, rotation and the bf16 cast into one
  elementwise kernel per tensor instead of going through complex views;
- text and image q/k/v concatenated along the sequence axis of [B, H, S, D], so that same fused
  kernel writes the joint tensors in the attention kernel's own contiguous layout;
- PyTorch's scaled_dot_product_attention called on those (its own backend choice: cuDNN on Hopper),
  or diffusers' dispatcher when an attention backend was chosen (``EDITOR_ATTENTION_BACKEND``).

The images stay within rounding of the reference processor's (float32 on the CPU: ~1e-6 relative;
bf16 on the GPU: see docs/PERFORMANCE.md for the PSNR measured against the reference path).
Installed by ``install`` on a QwenImageTransformer2DModel; other transformers are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """RoPE on [B, S, H, D] with complex ``freqs`` [S, D/2], as diffusers' apply_rotary_emb_qwen
    (use_real=False) computes it: consecutive pairs of x are (real, imaginary), multiplied by
    freqs in float32, cast back to x's dtype."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    real, imag = pairs[..., 0], pairs[..., 1]
    rotation = torch.view_as_real(freqs)[:, None]  # [S, 1, D/2, 2]: broadcast over heads
    cos, sin = rotation[..., 0], rotation[..., 1]
    turned = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return turned.flatten(-2).to(x.dtype)


class QwenJointAttention:
    """Drop-in attention processor for QwenImageTransformerBlock.attn (see the module's doc)."""

    # Read by diffusers' set_attention_backend / context parallelism, as on its own processor.
    _attention_backend: Any = None
    _parallel_config: Any = None

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None:
            raise ValueError("QwenJointAttention needs encoder_hidden_states (the text stream)")
        if attention_mask is not None:
            raise ValueError(
                "QwenJointAttention builds the joint mask from encoder_hidden_states_mask; "
                "an external attention_mask is not accepted"
            )
        head_dim = attn.inner_dim // attn.heads
        seq_txt = encoder_hidden_states.shape[1]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*t.shape[:-1], -1, head_dim)  # [B, S, H, D]

        img_q, img_k, img_v = (
            heads(attn.to_q(hidden_states)),
            heads(attn.to_k(hidden_states)),
            heads(attn.to_v(hidden_states)),
        )
        txt_q, txt_k, txt_v = (
            heads(attn.add_q_proj(encoder_hidden_states)),
            heads(attn.add_k_proj(encoder_hidden_states)),
            heads(attn.add_v_proj(encoder_hidden_states)),
        )
        if attn.norm_q is not None:
            img_q = attn.norm_q(img_q)
        if attn.norm_k is not None:
            img_k = attn.norm_k(img_k)
        if attn.norm_added_q is not None:
            txt_q = attn.norm_added_q(txt_q)
        if attn.norm_added_k is not None:
            txt_k = attn.norm_added_k(txt_k)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            img_q, img_k = rotate(img_q, img_freqs), rotate(img_k, img_freqs)
            txt_q, txt_k = rotate(txt_q, txt_freqs), rotate(txt_k, txt_freqs)

        mask = None
        if encoder_hidden_states_mask is not None:
            image_mask = torch.ones(
                (hidden_states.shape[0], hidden_states.shape[1]),
                dtype=torch.bool,
                device=hidden_states.device,
            )
            mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)[:, None, None, :]

        if self._attention_backend is None and self._parallel_config is None:
            # [B, H, S, D], text first: the cat writes the attention kernel's contiguous layout.
            query = torch.cat([txt_q.transpose(1, 2), img_q.transpose(1, 2)], dim=2)
            key = torch.cat([txt_k.transpose(1, 2), img_k.transpose(1, 2)], dim=2)
            value = torch.cat([txt_v.transpose(1, 2), img_v.transpose(1, 2)], dim=2)
            joint = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
            joint = joint.transpose(1, 2)  # [B, S, H, D]
        else:
            from diffusers.models.attention_dispatch import dispatch_attention_fn

            query = torch.cat([txt_q, img_q], dim=1)
            key = torch.cat([txt_k, img_k], dim=1)
            value = torch.cat([txt_v, img_v], dim=1)
            joint = dispatch_attention_fn(
                query,
                key,
                value,
                attn_mask=mask,
                dropout_p=0.0,
                is_causal=False,
                backend=self._attention_backend,
                parallel_config=self._parallel_config,
            )
        joint = joint.flatten(2, 3).to(query.dtype)
        img_out = attn.to_out[0](joint[:, seq_txt:, :].contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)  # dropout
        txt_out = attn.to_add_out(joint[:, :seq_txt, :].contiguous())
        return img_out, txt_out


def install(transformer: Any) -> bool:
    """Give every joint-attention block of a QwenImageTransformer2DModel a QwenJointAttention
    (before set_attention_backend, which configures the processors it finds). Returns whether it
    did: another transformer keeps its own processors."""
    from diffusers import QwenImageTransformer2DModel

    if not isinstance(transformer, QwenImageTransformer2DModel):
        return False
    model: Any = transformer  # diffusers is untyped
    for block in model.transformer_blocks:
        block.attn.set_processor(QwenJointAttention())
    return True
