"""Which implementation the kernels' entry points run: Triton on CUDA tensors, the references elsewhere.

`use_triton` is for the forward-only kernels: while autograd records (training) their references
run instead, being differentiable and computing the same function. `use_triton_autograd` is for the
kernels that also have a Triton backward (an autograd.Function beside the kernel): they run on CUDA
whether or not a gradient is being recorded; `records_grad` says whether a call needs that Function.

`MEGADOC_KERNELS=reference` forces the plain-PyTorch references on the GPU too (the benchmark's
baseline); it is read at every call so one process can time both paths.
"""

from __future__ import annotations

import os

import torch


def _triton_allowed(x: torch.Tensor) -> bool:
    return x.is_cuda and os.environ.get("MEGADOC_KERNELS", "triton") != "reference"


def use_triton(x: torch.Tensor) -> bool:
    """True when `x` lives on a CUDA device, no gradient is being recorded, and the references are not forced."""
    return _triton_allowed(x) and not torch.is_grad_enabled()


def use_triton_autograd(x: torch.Tensor) -> bool:
    """True when `x` lives on a CUDA device and the references are not forced, gradient or not."""
    return _triton_allowed(x)


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd is recording and any of `tensors` (None ones skipped) requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
