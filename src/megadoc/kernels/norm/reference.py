"""RMSNorm and LayerNorm of the last dim in float32, returned in the input's dtype.

The model's norms take bf16 activations and float32 weights (a weight stored as an offset from 1
is not exact in bf16), so in plain PyTorch each is three kernels: cast up, norm, cast down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, in float32; returned in x's dtype."""
    return F.rms_norm(x.float(), x.shape[-1:], weight, eps).to(x.dtype)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim, in float32; returned in x's dtype."""
    return F.layer_norm(x.float(), x.shape[-1:], weight, bias, eps).to(x.dtype)
