"""Timestep normalization's entry points (defined in timestep_norm/reference.py).

On CUDA tensors both run the Triton kernels of timestep_norm/triton.py unless the "reference" backend
is chosen (kernels/backend.py); while autograd records a gradient of x, weight or bias,
`timestep_norm` runs the Triton forward with its Triton backward (an autograd.Function), the step
its reference. On that path no gradient flows into the carried statistics nor out of the returned
ones (they are buffers; the reference would differentiate them too).
"""

from __future__ import annotations

import torch

from megadoc.kernels.backend import records_grad, use_triton, use_triton_autograd
from megadoc.kernels.timestep_norm import reference
from megadoc.kernels.timestep_norm.reference import NormStats

__all__ = ["NormStats", "timestep_norm", "timestep_norm_step"]


def timestep_norm(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, NormStats]:
    """x [B, L, D] -> (y [B, L, D] in x's dtype, statistics after the span)."""
    if use_triton_autograd(x) and records_grad(x, weight, bias):
        from megadoc.kernels.timestep_norm.triton import timestep_norm_triton_autograd

        return timestep_norm_triton_autograd(x, stats, weight, bias, eps, padding_mask)
    if use_triton(x):
        from megadoc.kernels.timestep_norm.triton import timestep_norm_triton

        return timestep_norm_triton(x, stats, weight, bias, eps, padding_mask)
    return reference.timestep_norm(x, stats, weight, bias, eps, padding_mask)


def timestep_norm_step(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    out: NormStats | None = None,
) -> tuple[torch.Tensor, NormStats]:
    """One token per row: x [B, D] -> (y [B, D], updated statistics), the latter written into `out`
    when given (it may be `stats` itself: an in-place update)."""
    if use_triton(x):
        from megadoc.kernels.timestep_norm.triton import timestep_norm_step_triton

        return timestep_norm_step_triton(x, stats, weight, bias, eps, out)
    return reference.timestep_norm_step(x, stats, weight, bias, eps, out)
