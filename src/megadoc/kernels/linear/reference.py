"""Linear layers with their neighbours fused in: the gate before, the bias, SiLU, SwiGLU and the
residual after.

    fused_linear(x, W, bias, silu=, up=, scale=, residual=)
        = silu?(scale * x @ W.T + bias) * (scale * x @ up.T) + residual   (each part optional)

The reference here is the plain-PyTorch sequence the model always ran (cuBLAS for the products,
one kernel per elementwise step, each rounded to x's dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
) -> torch.Tensor:
    """`fused_linear` step by step in x's dtype (see the module docstring)."""
    if scale is not None:
        x = x * scale
    if residual is not None and bias is None and not silu and up is None:
        return add_linear(residual, x, weight)
    y = F.linear(x, weight, bias)
    if silu:
        y = F.silu(y)
    if up is not None:
        y = y * F.linear(x, up)
    return y if residual is None else y + residual
