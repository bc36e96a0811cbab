"""Which implementation the kernels' entry points run: Triton on CUDA tensors, the references elsewhere.

The Triton kernels are forward-only, so while autograd records (training) the references run: they
are differentiable and compute the same function.

`MEGADOC_KERNELS=reference` forces the plain-PyTorch references on the GPU too (the benchmark's
baseline); it is read at every call so one process can time both paths.
"""

from __future__ import annotations

import os

import torch


def use_triton(x: torch.Tensor) -> bool:
    """True when `x` lives on a CUDA device, no gradient is being recorded, and the references are not forced."""
    return x.is_cuda and not torch.is_grad_enabled() and os.environ.get("MEGADOC_KERNELS", "triton") != "reference"
