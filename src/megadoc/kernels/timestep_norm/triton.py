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

`timestep_norm_triton_autograd` is the same forward for training, saving every token's mean and
rstd ([B, G, L] float32 each), with a backward that mirrors the scan: one program per (batch row,
group) walks the blocks from last to first, carrying suffix sums of the gradients reaching the
running statistics (the derivation is in its docstring).

`timestep_norm_step_triton` is the one-token step (decoding) in one launch instead of the
reference's ~25 small float64 kernels: one program per batch row, in float64 as the reference, the
new statistics written in place when asked (a CUDA graph's buffers need no copies afterwards).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from megadoc.kernels.timestep_norm.reference import NormStats

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
    mean_t_ptr,  # [B, G, L] float32: every token's mean (written only when SAVE)
    rstd_t_ptr,  # [B, G, L] float32: every token's 1/sqrt(var + eps) (written only when SAVE)
    length,
    dim,
    groups,
    eps,
    GROUP_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_PAD: tl.constexpr,
    SAVE: tl.constexpr,
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

        rstd = tl.rsqrt(var_t + eps)
        y = (x - mean_t[:, None]) * rstd[:, None] * scale[None, :] + shift_out[None, :]
        y = tl.where(valid[:, None], y, 0.0)
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=io_mask)
        if SAVE:
            tl.store(mean_t_ptr + pid.to(tl.int64) * length + t, mean_t, mask=t_mask)
            tl.store(rstd_t_ptr + pid.to(tl.int64) * length + t, rstd, mask=t_mask)

        last = t == t0 + BLOCK_T - 1
        mean0 = tl.sum(tl.where(last, mean_t, 0.0), axis=0)
        var0 = tl.sum(tl.where(last, var_t, 0.0), axis=0)
        block_count = tl.sum(valid.to(tl.int32), axis=0)
        n0 = n0 + block_count.to(tl.float32)
        seen = seen + block_count

    tl.store(count_out_ptr + batch, count0 + seen, mask=group == 0)
    tl.store(mean_ptr + pid, mean0)
    tl.store(var_ptr + pid, var0)


def _launch_forward(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    pad: torch.Tensor | None,
    save: bool,
) -> tuple[torch.Tensor, NormStats, torch.Tensor | None, torch.Tensor | None]:
    """The span kernel on contiguous x and `pad` (uint8 or None) with length > 0: y, the statistics
    after the span in float32, and when `save` every token's mean and rstd [B, G, L] float32."""
    batch, length, dim = x.shape
    groups = stats.mean.shape[-1]
    group_size = dim // groups
    y = torch.empty_like(x)
    count = torch.empty_like(stats.count, dtype=torch.int64)
    mean = stats.mean.float().clone()
    var = stats.var.float().clone()
    mean_t = rstd_t = None
    if save:
        mean_t = x.new_empty((batch, groups, length), dtype=torch.float32)
        rstd_t = torch.empty_like(mean_t)
    _timestep_norm_kernel[(batch * groups,)](
        x,
        y,
        x if pad is None else pad,
        weight.contiguous(),
        bias.contiguous(),
        stats.count.to(torch.int64),
        count,
        mean,
        var,
        mean if mean_t is None else mean_t,
        var if rstd_t is None else rstd_t,
        length,
        dim,
        groups,
        eps,
        GROUP_SIZE=group_size,
        BLOCK_G=triton.next_power_of_2(group_size),
        BLOCK_T=BLOCK_T,
        HAS_PAD=pad is not None,
        SAVE=save,
        num_warps=4,
    )
    return y, NormStats(count=count, mean=mean, var=var), mean_t, rstd_t


def timestep_norm_triton(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, NormStats]:
    """x [B, L, D] -> (y [B, L, D] in x's dtype, statistics after the span); `stats` is not modified."""
    if x.shape[1] == 0:
        return torch.empty_like(x), stats
    pad = None if padding_mask is None else padding_mask.contiguous().to(torch.uint8)
    y, new, _, _ = _launch_forward(x.contiguous(), stats, weight, bias, eps, pad, save=False)
    return y, NormStats(count=new.count, mean=new.mean.to(stats.mean.dtype), var=new.var.to(stats.var.dtype))


@triton.jit
def _timestep_norm_backward_kernel(
    x_ptr,  # [B, L, D]
    dy_ptr,  # [B, L, D]
    dx_ptr,  # [B, L, D] x's dtype
    pad_ptr,  # [B, L] uint8, 1 = padding (read only when HAS_PAD)
    weight_ptr,  # [D]
    mean_t_ptr,  # [B, G, L] float32: every token's mean, from the forward
    rstd_t_ptr,  # [B, G, L] float32: every token's 1/sqrt(var + eps), from the forward
    count_ptr,  # [B] int64: tokens seen after the span
    shift_ptr,  # [B, G] float32: the mean after the span, the origin of the sums below
    dweight_ptr,  # [B, D] float32: this row's part of dweight
    dbias_ptr,  # [B, D] float32: this row's part of dbias
    length,
    dim,
    groups,
    GROUP_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_PAD: tl.constexpr,
):
    """Program (batch row, group): the span's blocks from last to first, carrying the suffix sums of
    the gradients into the running statistics (see `timestep_norm_triton_autograd`)."""
    pid = tl.program_id(0)
    batch = pid // groups
    group = pid % groups
    f = tl.arange(0, BLOCK_G)
    f_mask = f < GROUP_SIZE
    cols = group * GROUP_SIZE + f
    scale = tl.load(weight_ptr + cols, mask=f_mask, other=0.0).to(tl.float32) + 1.0
    shift = tl.load(shift_ptr + pid)
    n_after = tl.load(count_ptr + batch).to(tl.float32)  # tokens through the end of the current block
    carry_a = 0.0
    carry_q = 0.0
    carry_p = 0.0
    dweight = tl.zeros((BLOCK_G,), tl.float32)
    dbias = tl.zeros((BLOCK_G,), tl.float32)

    row = batch.to(tl.int64) * length
    stat_row = pid.to(tl.int64) * length
    n_blocks = tl.cdiv(length, BLOCK_T)
    # The previous block's loads are issued before this block's arithmetic, as in the forward.
    t = (n_blocks - 1) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = t < length
    io_mask = t_mask[:, None] & f_mask[None, :]
    offsets = (row + t)[:, None] * dim + cols[None, :]
    x_next = tl.load(x_ptr + offsets, mask=io_mask)
    dy_next = tl.load(dy_ptr + offsets, mask=io_mask)
    mean_next = tl.load(mean_t_ptr + stat_row + t, mask=t_mask)
    rstd_next = tl.load(rstd_t_ptr + stat_row + t, mask=t_mask)
    for i in range(n_blocks):
        t0 = (n_blocks - 1 - i) * BLOCK_T
        t = t0 + tl.arange(0, BLOCK_T)
        t_mask = t < length
        offsets = (row + t)[:, None] * dim + cols[None, :]
        io_mask = t_mask[:, None] & f_mask[None, :]
        valid = t_mask
        if HAS_PAD:
            valid = valid & (tl.load(pad_ptr + row + t, mask=t_mask, other=1) == 0)
        w = valid.to(tl.float32)
        x = tl.where(io_mask, x_next.to(tl.float32), 0.0)
        dy = tl.where(valid[:, None] & f_mask[None, :], dy_next.to(tl.float32), 0.0)
        mean_t = tl.where(t_mask, mean_next, 0.0)
        rstd = tl.where(t_mask, rstd_next, 0.0)
        t_before = t - BLOCK_T
        before_mask = t_before >= 0
        before_offsets = (row + t_before)[:, None] * dim + cols[None, :]
        x_next = tl.load(x_ptr + before_offsets, mask=before_mask[:, None] & f_mask[None, :])
        dy_next = tl.load(dy_ptr + before_offsets, mask=before_mask[:, None] & f_mask[None, :])
        mean_next = tl.load(mean_t_ptr + stat_row + t_before, mask=before_mask)
        rstd_next = tl.load(rstd_t_ptr + stat_row + t_before, mask=before_mask)

        m = tl.sum(x, axis=1) / GROUP_SIZE
        centred = tl.where(io_mask, x - m[:, None], 0.0)
        x_hat = tl.where(io_mask, (x - mean_t[:, None]) * rstd[:, None], 0.0)
        dbias += tl.sum(dy, axis=0)
        dweight += tl.sum(dy * x_hat, axis=0)
        dy_hat = dy * scale[None, :]

        # The gradients of mean_t and var_t over N_t, the tokens counted into them.
        block_count = tl.sum(w, axis=0)
        n_t = tl.maximum(n_after - block_count + tl.cumsum(w, axis=0), 1.0)
        a = -rstd * tl.sum(dy_hat, axis=1) / n_t
        q = -0.5 * rstd * rstd * tl.sum(dy_hat * x_hat, axis=1) / n_t
        p = (mean_t - shift) * q
        # Suffix sums over this block and every later one: what each token's moments feed.
        sum_a = carry_a + tl.cumsum(a, axis=0, reverse=True)
        sum_q = carry_q + tl.cumsum(q, axis=0, reverse=True)
        sum_p = carry_p + tl.cumsum(p, axis=0, reverse=True)
        dm = w * (sum_a + 2.0 * ((m - shift) * sum_q - sum_p))
        dv = w * sum_q
        dx = dy_hat * rstd[:, None] + (dm[:, None] + 2.0 * dv[:, None] * centred) / GROUP_SIZE
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=io_mask)

        carry_a += tl.sum(a, axis=0)
        carry_q += tl.sum(q, axis=0)
        carry_p += tl.sum(p, axis=0)
        n_after = n_after - block_count

    out = batch.to(tl.int64) * dim + cols
    tl.store(dweight_ptr + out, dweight, mask=f_mask)
    tl.store(dbias_ptr + out, dbias, mask=f_mask)


class _TimestepNormFunction(torch.autograd.Function):
    """The span kernel, saving every token's mean and rstd; its backward the reverse-time kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias, stats, eps, padding_mask):
        x = x.contiguous()
        pad = None if padding_mask is None else padding_mask.contiguous().to(torch.uint8)
        if x.shape[1] == 0:
            y, mean_t, rstd_t = torch.empty_like(x), None, None
            new = NormStats(stats.count.clone(), stats.mean.float().clone(), stats.var.float().clone())
        else:
            y, new, mean_t, rstd_t = _launch_forward(x, stats, weight, bias, eps, pad, save=True)
        ctx.save_for_backward(x, weight, mean_t, rstd_t, new.count, new.mean, pad)
        ctx.bias_dtype = bias.dtype
        mean, var = new.mean.to(stats.mean.dtype), new.var.to(stats.var.dtype)
        ctx.mark_non_differentiable(new.count, mean, var)
        return y, new.count, mean, var

    @staticmethod
    def backward(ctx, dy, *_):
        x, weight, mean_t, rstd_t, count, shift, pad = ctx.saved_tensors
        batch, length, dim = x.shape
        if length == 0:
            dbias = torch.zeros_like(weight, dtype=ctx.bias_dtype)
            return torch.zeros_like(x), torch.zeros_like(weight), dbias, None, None, None
        groups = shift.shape[-1]
        group_size = dim // groups
        dx = torch.empty_like(x)
        dweight = x.new_empty((batch, dim), dtype=torch.float32)
        dbias = torch.empty_like(dweight)
        _timestep_norm_backward_kernel[(batch * groups,)](
            x,
            dy.contiguous(),
            dx,
            x if pad is None else pad,
            weight.contiguous(),
            mean_t,
            rstd_t,
            count,
            shift,
            dweight,
            dbias,
            length,
            dim,
            groups,
            GROUP_SIZE=group_size,
            BLOCK_G=triton.next_power_of_2(group_size),
            BLOCK_T=BLOCK_T,
            HAS_PAD=pad is not None,
            num_warps=4,
        )
        return dx, dweight.sum(0).to(weight.dtype), dbias.sum(0).to(ctx.bias_dtype), None, None, None


def timestep_norm_triton_autograd(
    x: torch.Tensor,
    stats: NormStats,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, NormStats]:
    """`timestep_norm_triton` differentiable in x, weight and bias (training).

    The forward also saves every token's mean and rstd ([B, G, L] float32 each). The statistics
    are buffers: no gradient flows into the carried ones nor out of the returned ones.

    Backward, per (row, group), with dy taken as 0 on padded tokens, K features per group,
    h = dy * (weight + 1), x_hat = (x - mean_t) * rstd_t and N_t the tokens counted through t:
        dbias = sum_t dy ; dweight = sum_t dy * x_hat
        a_t = -rstd_t * sum_j h / N_t ; q_t = -rstd_t^2 / 2 * sum_j h * x_hat / N_t
    (the gradients of mean_t and var_t, over N_t: each valid token s <= t adds m_s/N_t to mean_t
    and (v_s + m_s^2)/N_t to var_t + mean_t^2). Token s's group mean m_s and variance v_s get the
    suffix sums over t >= s, taken about c = the mean after the span so they do not cancel:
        dm_s = A_s + 2 * ((m_s - c) * Q_s - P_s) ; dv_s = Q_s
        A_s, Q_s, P_s = sum_{t >= s} a_t, q_t, (mean_t - c) * q_t
        dx_s = h_s * rstd_s + (dm_s + 2 * dv_s * (x_s - m_s)) / K
    with dm_s = dv_s = 0 on padded tokens. The kernel sums dweight and dbias per row; torch, over rows.
    """
    y, count, mean, var = _TimestepNormFunction.apply(x, weight, bias, stats, eps, padding_mask)
    return y, NormStats(count=count, mean=mean, var=var)


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
        x,
        y,
        weight.contiguous(),
        bias.contiguous(),
        stats.count.contiguous(),
        stats.mean.contiguous(),
        stats.var.contiguous(),
        out.count,
        out.mean,
        out.var,
        dim,
        groups,
        eps,
        GROUP_SIZE=group_size,
        BLOCK_F=block_f,
        BLOCK_GROUPS=block_groups,
        num_warps=4,
    )
    return y, out
