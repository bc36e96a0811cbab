"""Linear layers with their neighbours fused in: the gate before, the bias, SiLU, SwiGLU and the
residual after.

    fused_linear(x, W, bias, silu=, up=, scale=, residual=)
        = silu?(scale * x @ W.T + bias) * (scale * x @ up.T) + residual   (each part optional)

W and up may be stored as int8 with a float32 scale per output row (`quantize_per_channel`,
`weight_scale=`, `up_scale=`): W = W_int8 * weight_scale[:, None]. The reference dequantizes them,
rounds to x's dtype, and computes as for float weights.

The reference here is the plain-PyTorch sequence the model always ran (cuBLAS for the products,
one kernel per elementwise step, each rounded to x's dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INT8_MAX = 127


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight [N, K], float32 scale [N]): symmetric, scale = absmax / 127 per output row, so
    that round(W / scale) spans [-127, 127]; a row whose scale would be 0 (all zeros) gets scale 1."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    quantized = (weight / scale[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return quantized, scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`: an int8 one as weight * scale[:, None] (in the scale's dtype, then rounded)."""
    if weight.dtype != torch.int8:
        return weight
    if scale is None:
        raise ValueError("an int8 weight needs its per-row scale")
    return (weight.to(scale.dtype) * scale[:, None]).to(dtype)


def add_linear(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """acc + x @ weight.T, in one GEMM (cuBLAS adds `acc` in its epilogue: no addition kernel) unless
    autocast is on: it would round `acc`, the float32 residual stream in training, to bf16."""
    if torch.is_autocast_enabled(acc.device.type):
        return acc + F.linear(x, weight)
    return torch.addmm(acc.flatten(0, -2), x.flatten(0, -2), weight.t()).view(acc.shape)


def fused_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    silu: bool = False,
    up: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    weight_scale: torch.Tensor | None = None,
    up_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """`fused_linear` step by step in x's dtype (see the module docstring)."""
    weight = dequantize(weight, weight_scale, x.dtype)
    if scale is not None:
        x = x * scale
    if residual is not None and bias is None and not silu and up is None:
        return add_linear(residual, x, weight)
    y = F.linear(x, weight, bias)
    if silu:
        y = F.silu(y)
    if up is not None:
        y = y * F.linear(x, dequantize(up, up_scale, x.dtype))
    return y if residual is None else y + residual
