"""The fused linear layer's entry point (the function is defined in linear/reference.py).

With one to 16 rows on a CUDA device (decoding) `fused_linear` runs linear/triton.py: the whole
expression in one pass over the weights, float32 inside, rounded once. At batch 1 a decoding step is
little else than these weight reads, and cuBLAS's kernels for a single row read them at ~75% of the
copy bandwidth (benchmarks/KERNELS-NOTES.md). More rows, autocast or the "reference" backend run the
reference.

Weights stored as int8 (`quantize_per_channel`, engine/quantize.py) come with their float32 per-row
scales (`weight_scale=`, `up_scale=`): the Triton kernel reads half the bytes and scales each output
after the sum; the reference (more rows: a prefill) dequantizes them per call.

`fused_linear_grouped` reads several weights that share their input (a `LinearGroup`, concatenated
once) in one launch of the same kernel, each segment with its own epilogue; elsewhere its reference
runs the segments' `fused_linear` calls in turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from megadoc.kernels.backend import use_triton
from megadoc.kernels.linear import reference
from megadoc.kernels.linear.reference import LinearGroup, add_linear, quantize_per_channel

__all__ = [
    "MAX_FUSED_ROWS",
    "LinearGroup",
    "add_linear",
    "fused_linear",
    "fused_linear_grouped",
    "quantize_per_channel",
]

MAX_FUSED_ROWS = 16  # rows the Triton kernel takes (one 16-row tile of the matrix units); more go to cuBLAS


def _kernel_takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the Triton kernel runs for x [..., K] and weight [N, K] (see the module docstring)."""
    return (
        use_triton(x)
        and x.numel() // x.shape[-1] <= MAX_FUSED_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and weight.dtype in (x.dtype, torch.int8)
        and not torch.is_autocast_enabled("cuda")
    )


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
    """silu?(scale * x @ weight.T + bias) * (scale * x @ up.T) + residual for x [..., K], weights
    [N, K]; `scale` is shaped like x, `residual` like the output [..., N]. Int8 weights are
    weight * weight_scale[:, None] and up * up_scale[:, None] (scales float32 [N])."""
    parts = dict(silu=silu, up=up, scale=scale, residual=residual, weight_scale=weight_scale, up_scale=up_scale)
    if _kernel_takes(x, weight):
        from megadoc.kernels.linear.triton import fused_linear_triton

        return fused_linear_triton(x, weight, bias, **parts)
    return reference.fused_linear(x, weight, bias, **parts)


def fused_linear_grouped(
    x: torch.Tensor, group: LinearGroup, residuals: Sequence[torch.Tensor | None] | None = None
) -> tuple[torch.Tensor, ...]:
    """(silu?(x @ W1.T + bias1) + residual1, ...) for x [..., K] and each segment of `group`, its
    residual (or None; one segment at most takes one) from `residuals`. One launch on the Triton
    path; the outputs may be views of one tensor."""
    if _kernel_takes(x, group.weight):
        from megadoc.kernels.linear.triton import fused_linear_grouped_triton

        return fused_linear_grouped_triton(x, group, residuals)
    return reference.fused_linear_grouped(x, group, residuals)
