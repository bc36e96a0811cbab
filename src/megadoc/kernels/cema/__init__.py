"""CEMA's entry points (the function and its three forms are defined in cema/reference.py).

`cema` and `cema_step` are what the model calls: on CUDA tensors they run the Triton kernels of
cema/triton.py unless the "reference" backend is chosen (kernels/backend.py). `cema` has a Triton
backward, so it runs them in training too; `cema_step` runs its reference while a gradient is being
recorded.
"""

from __future__ import annotations

import torch

from megadoc.kernels.backend import records_grad, use_triton, use_triton_autograd
from megadoc.kernels.cema import reference
from megadoc.kernels.cema.reference import CemaCoefficients, cema_coefficients

__all__ = ["CemaCoefficients", "cema", "cema_coefficients", "cema_step"]


def cema_step(x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step. x [B, D] -> (y [B, D], new h [B, D, N])."""
    if use_triton(x):
        from megadoc.kernels.cema.triton import cema_step_triton

        return cema_step_triton(x, coeffs, h)
    return reference.cema_step(x, coeffs, h)


def cema(x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CEMA over a span with carried state: the Triton scan on CUDA (with its Triton backward while a
    gradient is being recorded), `cema_chunked` elsewhere."""
    if use_triton_autograd(x) and records_grad(x, h, coeffs.p, coeffs.log_q, coeffs.g, coeffs.omega):
        from megadoc.kernels.cema.triton import cema_triton_autograd

        return cema_triton_autograd(x, coeffs, h)
    if use_triton(x):
        from megadoc.kernels.cema.triton import cema_triton

        return cema_triton(x, coeffs, h)
    return reference.cema_chunked(x, coeffs, h)
