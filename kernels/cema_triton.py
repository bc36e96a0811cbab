"""Complex EMA as a Triton scan: the same function as `cema_chunked` / `cema_step` in kernels/cema.py.

Each program owns BLOCK_D features of one batch row (one feature per thread, all N complex
components of its state in that thread's registers) and walks one time segment token by token:
    h = q * h + p * x_t ;  y_t = Re(sum_n g_n h_n) + omega * x_t
in float32. Traffic: x read once, y written once, h read and written once (bf16 7B chunk of
4096 x 4096: 32 MB in, 32 MB out).

A batch-1 call has only D / BLOCK_D = 128 programs, too few to fill an H100, so the time axis is
split into S segments and the scan runs twice: pass 1 scans every segment from a zero state and
keeps only its end state E_s; a short torch loop chains the segments' entering states
H_{s+1} = q^len * H_s + E_s; pass 2 rescans each segment from H_s and writes y. That reads x
twice but runs S times as many programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from megadoc.kernels.cema import CemaCoefficients

BLOCK_D = 32  # features per program: one warp, one feature per thread
TARGET_PROGRAMS = 1024  # enough one-warp programs to keep every multiprocessor of an H100 busy
MIN_SEGMENT = 128  # shorter segments spend more on the second pass than they save


@triton.jit
def _cema_scan_kernel(
    x_ptr,  # [B, L, D] any float dtype
    y_ptr,  # [B, L, D] x's dtype (untouched when WRITE_Y is False)
    h_in_ptr,  # [B, S, D, N, 2] float32: entering state of each segment (complex as pairs)
    h_out_ptr,  # [B, S, D, N, 2] float32: state after each segment
    p_ptr,  # [D, N] float32
    q_ptr,  # [D, N, 2] float32
    g_ptr,  # [D, N, 2] float32
    omega_ptr,  # [D] float32
    length,
    dim,
    segments,
    segment_len,
    NDIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    WRITE_Y: tl.constexpr,
):
    """Program (feature block, batch row x segment): scan the segment's tokens from its entering state."""
    pid_d = tl.program_id(0)
    pid_bs = tl.program_id(1)
    batch = pid_bs // segments
    segment = pid_bs % segments
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, NDIM)
    d_mask = d < dim
    lane_mask = d_mask[None, :] & (n[:, None] < NDIM)

    # [N, BLOCK_D] tiles: the N components of a feature stay in one thread.
    coef = d[None, :] * NDIM + n[:, None]
    p = tl.load(p_ptr + coef, mask=lane_mask, other=0.0)
    q_re = tl.load(q_ptr + 2 * coef, mask=lane_mask, other=0.0)
    q_im = tl.load(q_ptr + 2 * coef + 1, mask=lane_mask, other=0.0)
    g_re = tl.load(g_ptr + 2 * coef, mask=lane_mask, other=0.0)
    g_im = tl.load(g_ptr + 2 * coef + 1, mask=lane_mask, other=0.0)
    omega = tl.load(omega_ptr + d, mask=d_mask, other=0.0)

    state = 2 * (pid_bs.to(tl.int64) * dim * NDIM + coef)
    h_re = tl.load(h_in_ptr + state, mask=lane_mask, other=0.0)
    h_im = tl.load(h_in_ptr + state + 1, mask=lane_mask, other=0.0)

    start = segment * segment_len
    stop = tl.minimum(start + segment_len, length)
    row = batch.to(tl.int64) * length * dim + d
    zero = tl.zeros([BLOCK_D], tl.int32)  # the masks below compare per lane
    # Loads run four tokens ahead of the recurrence (x_a..x_d rotate), so four loads are in
    # flight while a token's arithmetic runs: one warp per program has nothing else to hide them.
    x_a = tl.load(x_ptr + row + start * dim, mask=d_mask & (zero + start < stop), other=0.0)
    x_b = tl.load(x_ptr + row + (start + 1) * dim, mask=d_mask & (zero + start + 1 < stop), other=0.0)
    x_c = tl.load(x_ptr + row + (start + 2) * dim, mask=d_mask & (zero + start + 2 < stop), other=0.0)
    x_d = tl.load(x_ptr + row + (start + 3) * dim, mask=d_mask & (zero + start + 3 < stop), other=0.0)
    for t in range(start, stop):
        x = x_a.to(tl.float32)
        x_a, x_b, x_c = x_b, x_c, x_d
        x_d = tl.load(x_ptr + row + (t + 4) * dim, mask=d_mask & (zero + t + 4 < stop), other=0.0)
        px = p * x[None, :]
        h_re, h_im = q_re * h_re - q_im * h_im + px, q_re * h_im + q_im * h_re
        if WRITE_Y:
            y = tl.sum(g_re * h_re - g_im * h_im, axis=0) + omega * x
            tl.store(y_ptr + row + t * dim, y.to(y_ptr.dtype.element_ty), mask=d_mask)

    tl.store(h_out_ptr + state, h_re, mask=lane_mask)
    tl.store(h_out_ptr + state + 1, h_im, mask=lane_mask)


def _segments_for(batch: int, length: int, dim: int) -> int:
    programs = batch * triton.cdiv(dim, BLOCK_D)
    wanted = max(1, TARGET_PROGRAMS // programs)
    return max(1, min(wanted, length // MIN_SEGMENT))


def _scan(
    x: torch.Tensor, y: torch.Tensor, h_in: torch.Tensor, coeffs: tuple[torch.Tensor, ...], segments: int,
    segment_len: int, write_y: bool,
) -> torch.Tensor:
    """One launch over [B, S] segments; returns the end states [B, S, D, N] complex64."""
    batch, length, dim = x.shape
    ndim = h_in.shape[-1]
    h_in = torch.view_as_real(h_in.contiguous())
    h_out = torch.empty_like(h_in)
    grid = (triton.cdiv(dim, BLOCK_D), batch * segments)
    _cema_scan_kernel[grid](
        x, y, h_in, h_out, *coeffs, length, dim, segments, segment_len,
        NDIM=ndim, BLOCK_D=BLOCK_D, WRITE_Y=write_y, num_warps=max(1, BLOCK_D // 32),
    )
    return torch.view_as_complex(h_out)


def cema_triton(
    x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor | None = None, segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CEMA over a span: x [B, L, D] -> (y [B, L, D] in x's dtype, h [B, D, N] complex64).

    `segments` splits the time axis for parallelism (default: enough to fill the GPU)."""
    batch, length, dim = x.shape
    ndim = coeffs.p.shape[1]
    if ndim & (ndim - 1):
        raise ValueError(f"cema_triton needs a power-of-two cema_ndim, got {ndim}")
    if h is None:
        h = torch.zeros(batch, dim, ndim, dtype=torch.complex64, device=x.device)
    x = x.contiguous()
    y = torch.empty_like(x)
    if length == 0:
        return y, h
    q = coeffs.q
    packed = (
        coeffs.p.float().contiguous(),
        torch.view_as_real(q.to(torch.complex64)).contiguous(),
        torch.view_as_real(coeffs.g.to(torch.complex64)).contiguous(),
        coeffs.omega.float().contiguous(),
    )
    segments = segments or _segments_for(batch, length, dim)
    segment_len = triton.cdiv(length, segments)
    segments = triton.cdiv(length, segment_len)
    h = h.to(torch.complex64)
    if segments == 1:
        h_out = _scan(x, y, h[:, None], packed, 1, segment_len, True)
        return y, h_out[:, 0]

    zeros = h.new_zeros(batch, segments, dim, ndim)
    local_end = _scan(x, y, zeros, packed, segments, segment_len, False)
    q_segment = torch.exp(coeffs.log_q.to(torch.complex64) * segment_len)
    entering = [h]
    for s in range(segments - 1):
        entering.append(q_segment * entering[-1] + local_end[:, s])
    h_out = _scan(x, y, torch.stack(entering, 1), packed, segments, segment_len, True)
    return y, h_out[:, -1]


def cema_step_triton(x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step in one launch: x [B, D] -> (y [B, D], new h [B, D, N])."""
    y, h = cema_triton(x[:, None], coeffs, h, segments=1)
    return y[:, 0], h
