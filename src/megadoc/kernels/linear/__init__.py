"""The fused linear layer's entry point (the function is defined in linear/reference.py).

With one to 16 rows on a CUDA device (decoding) `fused_linear` runs linear/triton.py: the whole
expression in one pass over the weights, float32 inside, rounded once. At batch 1 a decoding step is
little else than these weight reads, and cuBLAS's kernels for a single row read them at ~75% of the
copy bandwidth (benchmarks/KERNELS-NOTES.md). More rows, autocast or the "reference" backend run the
reference.
"""

from __future__ import annotations

import torch

from megadoc.kernels.backend import use_triton
from megadoc.kernels.linear import reference
from megadoc.kernels.linear.reference import add_linear

__all__ = ["MAX_FUSED_ROWS", "add_linear", "fused_linear"]

MAX_FUSED_ROWS = 16  # rows the Triton kernel takes (one 16-row tile of the matrix units); more go to cuBLAS


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
    """silu?(scale * x @ weight.T + bias) * (scale * x @ up.T) + residual for x [..., K], weights
    [N, K]; `scale` is shaped like x, `residual` like the output [..., N]."""
    rows = x.numel() // x.shape[-1]
    if (
        use_triton(x)
        and rows <= MAX_FUSED_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and x.dtype == weight.dtype
        and not torch.is_autocast_enabled("cuda")
    ):
        from megadoc.kernels.linear.triton import fused_linear_triton

        return fused_linear_triton(x, weight, bias, silu=silu, up=up, scale=scale, residual=residual)
    return reference.fused_linear(x, weight, bias, silu=silu, up=up, scale=scale, residual=residual)
