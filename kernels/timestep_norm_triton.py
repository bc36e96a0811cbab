"""Timestep norm as a Triton scan: the same function as `timestep_norm` in kernels/timestep_norm.py.

One program per (batch row, group) walks the span in blocks of BLOCK_T tokens. For a block it
computes every token's group mean m and population variance v at once, prefix-sums them (relative
to the block's first token, so the sums stay small), and merges each prefix with the statistics
carried from before the block by Chan's formula
    n = n0 + k ; delta = mean_k - mean0
    mean = mean0 + delta * k / n
    var  = var0 * n0 / n + var_k * k / n + delta^2 * (n0 / n) * (k / n)
whose terms are all non-negative: float32 holds its precision after a million tokens, where the
reference needs float64 prefix sums. Padded tokens carry zero weight and output exact zeros.
Traffic: x read once, y written once (plus the mask); the statistics stay in registers.

`timestep_norm_step_triton` is the one-token step (decoding) in one launch instead of the
reference's ~25 small float64 kernels: one program per batch row, in float64 as the reference, the
new statistics written in place when asked (a CUDA graph's buffers need no copies afterwards).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from megadoc.kernels.timestep_norm import NormStats

BLOCK_T = 64  # tokens per block
STEP_TILE = 4096  # features per block of the one-token step (the 7B's D: one block)


@triton.jit
def _timestep_norm_kernel(
    x_ptr,  # [B, L, D]
    y_ptr,  # [B, L, D] x's dtype
    pad_ptr,  # [B, L] uint8, 1 = padding (read only when HAS_PAD)
    weight_ptr,  # [D]
    bias_ptr,  # [D]
    count_ptr,  # [B] int64: tokens seen before the span
    count_out_ptr,  # [B] int64: tokens seen after it (written by group 0's program)
    mean_ptr,  # [B, G] float32, read and overwritten
    var_ptr,  # [B, G] float32, read and overwritten
    length,
    dim,
    groups,
    eps,
    GROUP_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_PAD: tl.constexpr,
):
    """Program (batch row, group): normalize the group's features of every token of the span."""
    pid = tl.program_id(0)
    batch = pid // groups
    group = pid % groups
    f = tl.arange(0, BLOCK_G)
    f_mask = f < GROUP_SIZE
    cols = group * GROUP_SIZE + f
    scale = tl.load(weight_ptr + cols, mask=f_mask, other=0.0).to(tl.float32) + 1.0
    shift_out = tl.load(bias_ptr + cols, mask=f_mask, other=0.0).to(tl.float32)

    count0 = tl.load(count_ptr + batch)
    n0 = count0.to(tl.float32)
    mean0 = tl.load(mean_ptr + pid).to(tl.float32)
    var0 = tl.load(var_ptr + pid).to(tl.float32)
    seen = count0 * 0

    row = batch.to(tl.int64) * length
    # The next block's load is issued before this block's arithmetic, to overlap its latency.
    t = tl.arange(0, BLOCK_T)
    x_next = tl.load(x_ptr + (row + t)[:, None] * dim + cols[None, :], mask=(t < length)[:, None] & f_mask[None, :])
    for t0 in range(0, length, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_mask = t < length
        offsets = (row + t)[:, None] * dim + cols[None, :]
        io_mask = t_mask[:, None] & f_mask[None, :]
        x = tl.where(io_mask, x_next.to(tl.float32), 0.0)
        t_ahead = t + BLOCK_T
        ahead_mask = (t_ahead < length)[:, None] & f_mask[None, :]
        x_next = tl.load(x_ptr + (row + t_ahead)[:, None] * dim + cols[None, :], mask=ahead_mask)
        valid = t_mask
        if HAS_PAD:
            valid = valid & (tl.load(pad_ptr + row + t, mask=t_mask, other=1) == 0)
        w = valid.to(tl.float32)

        m = tl.sum(x, axis=1) / GROUP_SIZE
        centred = tl.where(io_mask, x - m[:, None], 0.0)
        v = tl.sum(centred * centred, axis=1) / GROUP_SIZE

        # Prefix statistics of the block's valid tokens, relative to its first token's mean.
        base = tl.sum(tl.where(t == t0, m, 0.0), axis=0)
        rel = m - base
        k = tl.cumsum(w, axis=0)
        s1 = tl.cumsum(w * rel, axis=0)
        s2 = tl.cumsum(w * (v + rel * rel), axis=0)
        k_safe = tl.maximum(k, 1.0)
        mean_k = s1 / k_safe
        var_k = s2 / k_safe - mean_k * mean_k
        mean_k = mean_k + base

        # Merge each prefix with the carried statistics (Chan).
        total = tl.maximum(n0 + k, 1.0)
        old = n0 / total
        new = k / total
        delta = mean_k - mean0
        mean_t = mean0 + delta * new
        var_t = var0 * old + var_k * new + delta * delta * old * new
        # Before the first valid token of a fresh stream there is nothing to merge.
        var_t = tl.where(n0 + k > 0, var_t, var0)

        y = (x - mean_t[:, None]) * tl.rsqrt(var_t + eps)[:, None] * scale[None, :] + shift_out[None, :]
        y = tl.where(valid[:, None], y, 0.0)
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=io_mask)

        last = t == t0 + BLOCK_T - 1
        mean0 = tl.sum(tl.where(last, mean_t, 0.0), axis=0)
        var0 = tl.sum(tl.where(last, var_t, 0.0), axis=0)
        block_count = tl.sum(valid.to(tl.int32), axis=0)
        n0 = n0 + block_count.to(tl.float32)
        seen = seen + block_count

    tl.store(count_out_ptr + batch, count0 + seen, mask=group == 0)
    tl.store(mean_ptr + pid, mean0)
    tl.store(var_ptr + pid, var0)


def timestep_norm_triton(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, NormStats]:
    """x [B, L, D] -> (y [B, L, D] in x's dtype, statistics after the span); `stats` is not modified."""
    batch, length, dim = x.shape
    groups = stats.mean.shape[-1]
    if length == 0:
        return torch.empty_like(x), stats
    group_size = dim // groups
    x = x.contiguous()
    y = torch.empty_like(x)
    count = torch.empty_like(stats.count, dtype=torch.int64)
    mean = stats.mean.float().clone()
    var = stats.var.float().clone()
    pad = x if padding_mask is None else padding_mask.contiguous().to(torch.uint8)
    _timestep_norm_kernel[(batch * groups,)](
        x, y, pad, weight.contiguous(), bias.contiguous(), stats.count.to(torch.int64), count, mean, var,
        length, dim, groups, eps,
        GROUP_SIZE=group_size, BLOCK_G=triton.next_power_of_2(group_size), BLOCK_T=BLOCK_T,
        HAS_PAD=padding_mask is not None, num_warps=4,
    )
    return y, NormStats(count=count, mean=mean.to(stats.mean.dtype), var=var.to(stats.var.dtype))


@triton.jit
def _timestep_norm_step_kernel(
    x_ptr,  # [B, D]
    y_ptr,  # [B, D] x's dtype
    weight_ptr,  # [D]
    bias_ptr,  # [D]
    count_ptr,  # [B] int64
    mean_ptr,  # [B, G]
    var_ptr,  # [B, G]
    count_out_ptr,  # [B] int64: may be count_ptr itself
    mean_out_ptr,  # [B, G]: may be mean_ptr itself
    var_out_ptr,  # [B, G]: may be var_ptr itself
    dim,
    groups,
    eps,
    GROUP_SIZE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_GROUPS: tl.constexpr,
):
    """Program (batch row): one token, BLOCK_GROUPS groups at a time, in float64 as the reference."""
    row = tl.program_id(0)
    count = tl.load(count_ptr + row)
    c = 1.0 / (count.to(tl.float64) + 1.0)
    f = tl.arange(0, BLOCK_F)
    f_mask = f < GROUP_SIZE
    x_row = row.to(tl.int64) * dim
    for g0 in range(0, groups, BLOCK_GROUPS):
        g = g0 + tl.arange(0, BLOCK_GROUPS)
        g_mask = g < groups
        cols = g[:, None] * GROUP_SIZE + f[None, :]
        mask = g_mask[:, None] & f_mask[None, :]
        x = tl.load(x_ptr + x_row + cols, mask=mask, other=0.0).to(tl.float32).to(tl.float64)
        m = tl.sum(x, axis=1) / GROUP_SIZE
        centred = tl.where(mask, x - m[:, None], 0.0)
        v = tl.sum(centred * centred, axis=1) / GROUP_SIZE

        stat = row * groups + g
        mean0 = tl.load(mean_ptr + stat, mask=g_mask, other=0.0).to(tl.float64)
        var0 = tl.load(var_ptr + stat, mask=g_mask, other=1.0).to(tl.float64)
        d = m - mean0
        mean = mean0 + c * d
        var = var0 + c * (v + (1.0 - c) * d * d - var0)

        rstd = 1.0 / tl.sqrt(var + eps)
        scale = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32) + 1.0
        shift = tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = ((x - mean[:, None]) * rstd[:, None]).to(tl.float32) * scale + shift
        tl.store(y_ptr + x_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
        # Every thread has read the old statistics before any overwrites them (outputs may alias inputs).
        tl.debug_barrier()
        tl.store(mean_out_ptr + stat, mean.to(mean_out_ptr.dtype.element_ty), mask=g_mask)
        tl.store(var_out_ptr + stat, var.to(var_out_ptr.dtype.element_ty), mask=g_mask)
    tl.store(count_out_ptr + row, count + 1)


def timestep_norm_step_triton(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    out: NormStats | None = None,
) -> tuple[torch.Tensor, NormStats]:
    """One token per row in one launch: x [B, D] -> (y [B, D] in x's dtype, updated statistics).

    The statistics go to `out` (contiguous; may be `stats` itself, to update in place), else to new
    tensors. No host synchronisation: usable inside a CUDA graph."""
    batch, dim = x.shape
    groups = stats.mean.shape[-1]
    group_size = dim // groups
    if out is None:
        out = NormStats(torch.empty_like(stats.count), torch.empty_like(stats.mean), torch.empty_like(stats.var))
    x = x.contiguous()
    y = torch.empty_like(x)
    block_f = triton.next_power_of_2(group_size)
    block_groups = min(triton.next_power_of_2(groups), max(1, STEP_TILE // block_f))
    _timestep_norm_step_kernel[(batch,)](
        x, y, weight.contiguous(), bias.contiguous(),
        stats.count.contiguous(), stats.mean.contiguous(), stats.var.contiguous(), out.count, out.mean, out.var,
        dim, groups, eps,
        GROUP_SIZE=group_size, BLOCK_F=block_f, BLOCK_GROUPS=block_groups, num_warps=4,
    )
    return y, out
