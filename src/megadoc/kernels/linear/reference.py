"""Linear layers with their neighbours fused in: the gate before, the bias, SiLU, SwiGLU and the
residual after.

    fused_linear(x, W, bias, silu=, up=, scale=, residual=)
        = silu?(scale * x @ W.T + bias) * (scale * x @ up.T) + residual   (each part optional)

W and up may be stored as int8 with a float32 scale per output row (`quantize_per_channel`,
`weight_scale=`, `up_scale=`): W = W_int8 * weight_scale[:, None]. The reference dequantizes them,
rounds to x's dtype, and computes as for float weights.

Linears that read the same x go into one `LinearGroup` (their weights concatenated once):

    fused_linear_grouped(x, group, residuals) = (fused_linear(x, W1, bias1, silu=, residual=), ...)

one output per segment, each with its own epilogue; the kernel reads all of them in one launch.

The reference here is the plain-PyTorch sequence the model always ran (cuBLAS for the products,
one kernel per elementwise step, each rounded to x's dtype).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F

INT8_MAX = 127


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight [N, K], float32 scale [N]): symmetric, scale = absmax / 127 per output row, so
    that round(W / scale) spans [-127, 127]; a row whose scale would be 0 (all zeros) gets scale 1."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    quantized = (weight / scale[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return quantized, scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`: an int8 one as weight * scale[:, None] (in the scale's dtype, then rounded)."""
    if weight.dtype != torch.int8:
        return weight
    if scale is None:
        raise ValueError("an int8 weight needs its per-row scale")
    return (weight.to(scale.dtype) * scale[:, None]).to(dtype)


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
    weight_scale: torch.Tensor | None = None,
    up_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """`fused_linear` step by step in x's dtype (see the module docstring)."""
    weight = dequantize(weight, weight_scale, x.dtype)
    if scale is not None:
        x = x * scale
    if residual is not None and bias is None and not silu and up is None:
        return add_linear(residual, x, weight)
    y = F.linear(x, weight, bias)
    if silu:
        y = F.silu(y)
    if up is not None:
        y = y * F.linear(x, dequantize(up, up_scale, x.dtype))
    return y if residual is None else y + residual


@dataclass(frozen=True)
class LinearGroup:
    """Linears that read the same input, their weights concatenated once ([N1 + ... + Ns, K], all
    float of one dtype or all int8) so that one launch reads them all. `bias` holds zeros in the
    segments without one (None when no segment has one); `weight_scale` the int8 rows' scales.
    SiLU applies to the segments flagged in `silu`, which must be adjacent (one column range)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    weight_scale: torch.Tensor | None
    sizes: tuple[int, ...]
    biased: tuple[bool, ...]
    silu: tuple[bool, ...]

    @classmethod
    def of(
        cls,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor | None],
        silu: Sequence[bool],
        weight_scales: Sequence[torch.Tensor | None] | None = None,
    ) -> LinearGroup:
        """The group of `weights` [Ni, K] with their `biases` [Ni] (or None), `silu` flags and, for
        int8 weights, `weight_scales` [Ni] float32; the tensors are copied (`load_` refreshes them)."""
        scales = [None] * len(weights) if weight_scales is None else list(weight_scales)
        if not len(weights) == len(biases) == len(silu) == len(scales):
            raise ValueError("a LinearGroup needs one bias, SiLU flag and scale (or None) per weight")
        if len({(w.shape[1], w.dtype) for w in weights}) != 1:
            raise ValueError("the weights of a LinearGroup must share their input size and dtype")
        int8 = weights[0].dtype == torch.int8
        if int8 and any(s is None for s in scales):
            raise ValueError("int8 weights need their per-row scales")
        flagged = [i for i, flag in enumerate(silu) if flag]
        if flagged and flagged != list(range(flagged[0], flagged[-1] + 1)):
            raise ValueError("the SiLU segments of a LinearGroup must be adjacent")
        sizes = tuple(w.shape[0] for w in weights)
        device, total = weights[0].device, sum(sizes)
        present = [b for b in biases if b is not None]
        group = cls(
            weight=torch.empty(total, weights[0].shape[1], dtype=weights[0].dtype, device=device),
            bias=torch.zeros(total, dtype=present[0].dtype, device=device) if present else None,
            weight_scale=torch.empty(total, dtype=scales[0].dtype, device=device) if int8 else None,
            sizes=sizes,
            biased=tuple(b is not None for b in biases),
            silu=tuple(bool(flag) for flag in silu),
        )
        return group.load_(weights, biases, scales if int8 else None)

    def load_(
        self,
        weights: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor | None],
        weight_scales: Sequence[torch.Tensor | None] | None = None,
    ) -> LinearGroup:
        """Copy the segments' tensors in, in place (a captured graph reads these addresses); returns self."""
        for (start, end), weight, bias, scale in zip(
            self.bounds, weights, biases, weight_scales or [None] * len(weights), strict=True
        ):
            self.weight[start:end].copy_(weight)
            if bias is not None:
                self.bias[start:end].copy_(bias)
            if self.weight_scale is not None:
                self.weight_scale[start:end].copy_(scale)
        return self

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """Each segment's columns of the concatenated output, [start, end)."""
        ends = list(accumulate(self.sizes))
        return [(end - size, end) for size, end in zip(self.sizes, ends, strict=True)]

    @property
    def silu_columns(self) -> tuple[int, int] | None:
        """The columns SiLU applies to, [start, end) (None: none)."""
        flagged = [bound for bound, flag in zip(self.bounds, self.silu, strict=True) if flag]
        return (flagged[0][0], flagged[-1][1]) if flagged else None

    def segments(
        self,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, bool, torch.Tensor | None]]:
        """(weight, bias, silu, weight_scale) of each segment, as views of the concatenation."""
        for (start, end), biased, silu in zip(self.bounds, self.biased, self.silu, strict=True):
            bias = self.bias[start:end] if biased else None
            scale = None if self.weight_scale is None else self.weight_scale[start:end]
            yield self.weight[start:end], bias, silu, scale


def segment_residuals(
    group: LinearGroup, residuals: Sequence[torch.Tensor | None] | None
) -> tuple[torch.Tensor | None, ...]:
    """`residuals` checked against the group's segments (None: none takes one). One segment at most
    takes a residual: the kernel adds it to one column range."""
    if residuals is None:
        return (None,) * len(group.sizes)
    if len(residuals) != len(group.sizes):
        raise ValueError(f"{len(residuals)} residuals for a group of {len(group.sizes)} linears")
    if sum(r is not None for r in residuals) > 1:
        raise ValueError("one segment of a LinearGroup at most takes a residual")
    return tuple(residuals)


def fused_linear_grouped(
    x: torch.Tensor, group: LinearGroup, residuals: Sequence[torch.Tensor | None] | None = None
) -> tuple[torch.Tensor, ...]:
    """Each segment's `fused_linear` on x in turn (`residuals`: one per segment, or None)."""
    return tuple(
        fused_linear(x, weight, bias, silu=silu, residual=residual, weight_scale=scale)
        for (weight, bias, silu, scale), residual in zip(
            group.segments(), segment_residuals(group, residuals), strict=True
        )
    )
