"""Which implementation the kernels' entry points run: Triton on CUDA tensors, the references elsewhere.

The choice is explicit: `with backend("reference"):` runs the plain-PyTorch references on the GPU
too (the benchmarks' baseline, the kernel tests' ground truth); `backend("sdpa")` keeps every Triton
kernel but forward attention, which runs PyTorch's SDPA (a speed comparison); `backend("auto")` is
the default; `select_backend(name)` sets it without a block. The choice is process-wide (worker
threads see it), not per thread.

`use_triton` is for the forward-only kernels: while autograd records (training) their references
run instead, being differentiable and computing the same function. `use_triton_autograd` is for the
kernels that also have a Triton backward (an autograd.Function beside the kernel): they run on CUDA
whether or not a gradient is being recorded; `records_grad` says whether a call needs that Function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

BACKENDS = ("auto", "reference", "sdpa")
_current = "auto"


@contextmanager
def backend(name: str) -> Iterator[None]:
    """Run the kernels' entry points on `name` (one of BACKENDS) inside the block."""
    before = _current
    select_backend(name)
    try:
        yield
    finally:
        select_backend(before)


def select_backend(name: str) -> None:
    """Run the kernels' entry points on `name` from now on (a benchmark timing one path, then another)."""
    global _current
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _current = name


def current_backend() -> str:
    return _current


def use_triton(x: torch.Tensor) -> bool:
    """True when `x` lives on a CUDA device, no gradient is being recorded, and the references are not chosen."""
    return use_triton_autograd(x) and not torch.is_grad_enabled()


def use_triton_autograd(x: torch.Tensor) -> bool:
    """True when `x` lives on a CUDA device and the references are not chosen, gradient or not."""
    return x.is_cuda and _current != "reference"


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd is recording and any of `tensors` (None ones skipped) requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
