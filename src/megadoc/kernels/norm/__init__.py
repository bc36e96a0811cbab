"""RMSNorm's and LayerNorm's entry points (defined in norm/reference.py).

On CUDA tensors norm/triton.py does cast, norm and cast back in one pass (unless the "reference"
backend is chosen, kernels/backend.py). A single decoding row also escapes PyTorch's LayerNorm kernel,
which gives one row one thread block (8.5 us per call at the 7B's 4096 features on the H100,
benchmarks/KERNELS-NOTES.md run 4).
"""

from __future__ import annotations

import torch

from megadoc.kernels.backend import use_triton
from megadoc.kernels.norm import reference

__all__ = ["layer_norm", "rms_norm"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, in float32; returned in x's dtype."""
    if use_triton(x):
        from megadoc.kernels.norm.triton import row_norm_triton

        return row_norm_triton(x, weight, None, eps, center=False)
    return reference.rms_norm(x, weight, eps)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim, in float32; returned in x's dtype."""
    if use_triton(x):
        from megadoc.kernels.norm.triton import row_norm_triton

        return row_norm_triton(x, weight, bias, eps, center=True)
    return reference.layer_norm(x, weight, bias, eps)
