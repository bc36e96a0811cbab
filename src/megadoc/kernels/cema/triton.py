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

The backward (`_CemaScan`, for `cema_triton_autograd`), with G_z = dL/dRe z + i dL/dIm z:
    lam_t = conj(g) dy_t + conj(q) lam_{t+1}  (lam_L adds G_{h_L}),   dx_t = Re(sum_n p_n lam_t) + omega dy_t,
    G_p = sum x_t Re(lam_t),  G_omega = sum dy_t x_t,  G_{h_0} = conj(q) lam_1,
    G_g = sum dy_t conj(h_t),  G_q = sum dy_t conj(g k_t) + G_{h_L} conj(k_L),  k_t = dh_t/dq = q k_{t-1} + h_{t-1}.
(G_q = sum lam_t conj(h_{t-1}) too, but that pairs a backward quantity with a forward one at every
token; written with k, both sums run forward.) Three launches over the forward's segments, no
stored or divided-out states:
- the adjoint scan, backwards, twice like the forward's scan (pass 1 from zero, a torch chain over
  segments, pass 2 writing dx and the per-segment sums for p and omega);
- the tangent scan, forwards from the forward's saved entering states with k = 0 at each segment's
  start, summing dy h and dy k; the entering k_in (chained in torch) adds conj(k_in) a to G_q, a
  being what pass 1 of the adjoint left at the segment's start (conj(q) lam_start, from zero).
Per-segment sums go out as float32 partials and torch adds them up: deterministic. Bytes per call:
dy read 3x, x 2x, dx written once, plus [B, S, D, N] states.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from megadoc.kernels.cema.reference import CemaCoefficients

BLOCK_D = 32  # features per program: one warp, one feature per thread
TARGET_PROGRAMS = 1024  # enough one-warp programs to keep every multiprocessor of an H100 busy
MIN_SEGMENT = 128  # shorter segments spend more on the second pass than they save


@triton.jit
def _segment_tile(length, dim, segments, segment_len, NDIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """The layout every CEMA kernel shares: program (feature block, batch row x segment) holds
    [N, BLOCK_D] tiles, the N components of a feature in one thread. Returns (pid_bs, d, d_mask,
    lane_mask, coef, start, stop, row): `coef` indexes [D, N] coefficients, `row` a token's features."""
    pid_bs = tl.program_id(1)
    batch = pid_bs // segments
    segment = pid_bs % segments
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, NDIM)
    d_mask = d < dim
    lane_mask = d_mask[None, :] & (n[:, None] < NDIM)
    coef = d[None, :] * NDIM + n[:, None]
    start = segment * segment_len
    stop = tl.minimum(start + segment_len, length)
    row = batch.to(tl.int64) * length * dim + d
    return pid_bs, d, d_mask, lane_mask, coef, start, stop, row


@triton.jit
def _load_complex(ptr, cell, mask):
    """(real, imaginary) tiles of a complex float32 tensor stored as pairs, at element offsets `cell`."""
    return tl.load(ptr + 2 * cell, mask=mask, other=0.0), tl.load(ptr + 2 * cell + 1, mask=mask, other=0.0)


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
    pid_bs, d, d_mask, lane_mask, coef, start, stop, row = _segment_tile(
        length, dim, segments, segment_len, NDIM, BLOCK_D
    )
    p = tl.load(p_ptr + coef, mask=lane_mask, other=0.0)
    q_re, q_im = _load_complex(q_ptr, coef, lane_mask)
    g_re, g_im = _load_complex(g_ptr, coef, lane_mask)
    omega = tl.load(omega_ptr + d, mask=d_mask, other=0.0)
    cell = pid_bs.to(tl.int64) * dim * NDIM + coef
    h_re, h_im = _load_complex(h_in_ptr, cell, lane_mask)

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

    tl.store(h_out_ptr + 2 * cell, h_re, mask=lane_mask)
    tl.store(h_out_ptr + 2 * cell + 1, h_im, mask=lane_mask)


@triton.jit
def _cema_adjoint_kernel(
    dy_ptr,  # [B, L, D] y's dtype
    x_ptr,  # [B, L, D] (read only when WRITE_DX)
    dx_ptr,  # [B, L, D] x's dtype (written only when WRITE_DX)
    a_in_ptr,  # [B, S, D, N, 2] float32: adjoint entering each segment from its end
    a_out_ptr,  # [B, S, D, N, 2] float32: adjoint leaving each segment at its start
    grad_p_ptr,  # [B, S, D, N] float32: the segment's sum of x_t Re(lam_t) (when WRITE_DX)
    grad_omega_ptr,  # [B, S, D] float32: the segment's sum of dy_t x_t (when WRITE_DX)
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
    WRITE_DX: tl.constexpr,
):
    """Program (feature block, batch row x segment): walk the segment backwards from its entering adjoint a
    (the gradient reaching h_t from later tokens): lam_t = a + conj(g) dy_t, dx_t = Re(sum_n p_n lam_t) +
    omega dy_t, then a = conj(q) lam_t. Same layout and look-ahead loads as `_cema_scan_kernel`."""
    pid_bs, d, d_mask, lane_mask, coef, start, stop, row = _segment_tile(
        length, dim, segments, segment_len, NDIM, BLOCK_D
    )
    p = tl.load(p_ptr + coef, mask=lane_mask, other=0.0)
    q_re, q_im = _load_complex(q_ptr, coef, lane_mask)
    g_re, g_im = _load_complex(g_ptr, coef, lane_mask)
    omega = tl.load(omega_ptr + d, mask=d_mask, other=0.0)
    cell = pid_bs.to(tl.int64) * dim * NDIM + coef
    a_re, a_im = _load_complex(a_in_ptr, cell, lane_mask)
    acc_p = tl.zeros([NDIM, BLOCK_D], tl.float32)
    acc_omega = tl.zeros([BLOCK_D], tl.float32)

    zero = tl.zeros([BLOCK_D], tl.int32)
    dy_a = tl.load(dy_ptr + row + (stop - 1) * dim, mask=d_mask & (zero + stop - 1 >= start), other=0.0)
    dy_b = tl.load(dy_ptr + row + (stop - 2) * dim, mask=d_mask & (zero + stop - 2 >= start), other=0.0)
    dy_c = tl.load(dy_ptr + row + (stop - 3) * dim, mask=d_mask & (zero + stop - 3 >= start), other=0.0)
    dy_d = tl.load(dy_ptr + row + (stop - 4) * dim, mask=d_mask & (zero + stop - 4 >= start), other=0.0)
    if WRITE_DX:
        x_a = tl.load(x_ptr + row + (stop - 1) * dim, mask=d_mask & (zero + stop - 1 >= start), other=0.0)
        x_b = tl.load(x_ptr + row + (stop - 2) * dim, mask=d_mask & (zero + stop - 2 >= start), other=0.0)
        x_c = tl.load(x_ptr + row + (stop - 3) * dim, mask=d_mask & (zero + stop - 3 >= start), other=0.0)
        x_d = tl.load(x_ptr + row + (stop - 4) * dim, mask=d_mask & (zero + stop - 4 >= start), other=0.0)
    for i in range(0, stop - start):
        t = stop - 1 - i
        dy = dy_a.to(tl.float32)
        dy_a, dy_b, dy_c = dy_b, dy_c, dy_d
        dy_d = tl.load(dy_ptr + row + (t - 4) * dim, mask=d_mask & (zero + t - 4 >= start), other=0.0)
        lam_re = a_re + g_re * dy[None, :]
        lam_im = a_im - g_im * dy[None, :]
        if WRITE_DX:
            x = x_a.to(tl.float32)
            x_a, x_b, x_c = x_b, x_c, x_d
            x_d = tl.load(x_ptr + row + (t - 4) * dim, mask=d_mask & (zero + t - 4 >= start), other=0.0)
            dx = tl.sum(p * lam_re, axis=0) + omega * dy
            tl.store(dx_ptr + row + t * dim, dx.to(dx_ptr.dtype.element_ty), mask=d_mask)
            acc_p += x[None, :] * lam_re
            acc_omega += x * dy
        a_re, a_im = q_re * lam_re + q_im * lam_im, q_re * lam_im - q_im * lam_re

    tl.store(a_out_ptr + 2 * cell, a_re, mask=lane_mask)
    tl.store(a_out_ptr + 2 * cell + 1, a_im, mask=lane_mask)
    if WRITE_DX:
        tl.store(grad_p_ptr + cell, acc_p, mask=lane_mask)
        tl.store(grad_omega_ptr + pid_bs.to(tl.int64) * dim + d, acc_omega, mask=d_mask)


@triton.jit
def _cema_tangent_kernel(
    x_ptr,  # [B, L, D] any float dtype
    dy_ptr,  # [B, L, D] y's dtype
    h_in_ptr,  # [B, S, D, N, 2] float32: entering state of each segment (the forward's)
    k_out_ptr,  # [B, S, D, N, 2] float32: dh/dq after the segment, from dh/dq = 0 at its start
    sum_h_ptr,  # [B, S, D, N, 2] float32: the segment's sum of dy_t h_t
    sum_k_ptr,  # [B, S, D, N, 2] float32: the segment's sum of dy_t k_t
    p_ptr,  # [D, N] float32
    q_ptr,  # [D, N, 2] float32
    length,
    dim,
    segments,
    segment_len,
    NDIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Program (feature block, batch row x segment): rescan h forward from the segment's entering state
    beside its derivative in q, k_t = dh_t/dq = q k_{t-1} + h_{t-1} (k = 0 at the start: the torch
    side adds the entering k), and sum dy_t h_t and dy_t k_t for the gradients of g and q."""
    pid_bs, d, d_mask, lane_mask, coef, start, stop, row = _segment_tile(
        length, dim, segments, segment_len, NDIM, BLOCK_D
    )
    p = tl.load(p_ptr + coef, mask=lane_mask, other=0.0)
    q_re, q_im = _load_complex(q_ptr, coef, lane_mask)
    cell = pid_bs.to(tl.int64) * dim * NDIM + coef
    h_re, h_im = _load_complex(h_in_ptr, cell, lane_mask)
    k_re = tl.zeros([NDIM, BLOCK_D], tl.float32)
    k_im = tl.zeros([NDIM, BLOCK_D], tl.float32)
    sum_h_re = tl.zeros([NDIM, BLOCK_D], tl.float32)
    sum_h_im = tl.zeros([NDIM, BLOCK_D], tl.float32)
    sum_k_re = tl.zeros([NDIM, BLOCK_D], tl.float32)
    sum_k_im = tl.zeros([NDIM, BLOCK_D], tl.float32)

    zero = tl.zeros([BLOCK_D], tl.int32)
    x_a = tl.load(x_ptr + row + start * dim, mask=d_mask & (zero + start < stop), other=0.0)
    x_b = tl.load(x_ptr + row + (start + 1) * dim, mask=d_mask & (zero + start + 1 < stop), other=0.0)
    x_c = tl.load(x_ptr + row + (start + 2) * dim, mask=d_mask & (zero + start + 2 < stop), other=0.0)
    x_d = tl.load(x_ptr + row + (start + 3) * dim, mask=d_mask & (zero + start + 3 < stop), other=0.0)
    dy_a = tl.load(dy_ptr + row + start * dim, mask=d_mask & (zero + start < stop), other=0.0)
    dy_b = tl.load(dy_ptr + row + (start + 1) * dim, mask=d_mask & (zero + start + 1 < stop), other=0.0)
    dy_c = tl.load(dy_ptr + row + (start + 2) * dim, mask=d_mask & (zero + start + 2 < stop), other=0.0)
    dy_d = tl.load(dy_ptr + row + (start + 3) * dim, mask=d_mask & (zero + start + 3 < stop), other=0.0)
    for t in range(start, stop):
        x = x_a.to(tl.float32)
        x_a, x_b, x_c = x_b, x_c, x_d
        x_d = tl.load(x_ptr + row + (t + 4) * dim, mask=d_mask & (zero + t + 4 < stop), other=0.0)
        dy = dy_a.to(tl.float32)[None, :]
        dy_a, dy_b, dy_c = dy_b, dy_c, dy_d
        dy_d = tl.load(dy_ptr + row + (t + 4) * dim, mask=d_mask & (zero + t + 4 < stop), other=0.0)
        k_re, k_im = q_re * k_re - q_im * k_im + h_re, q_re * k_im + q_im * k_re + h_im
        px = p * x[None, :]
        h_re, h_im = q_re * h_re - q_im * h_im + px, q_re * h_im + q_im * h_re
        sum_h_re += dy * h_re
        sum_h_im += dy * h_im
        sum_k_re += dy * k_re
        sum_k_im += dy * k_im

    tl.store(k_out_ptr + 2 * cell, k_re, mask=lane_mask)
    tl.store(k_out_ptr + 2 * cell + 1, k_im, mask=lane_mask)
    tl.store(sum_h_ptr + 2 * cell, sum_h_re, mask=lane_mask)
    tl.store(sum_h_ptr + 2 * cell + 1, sum_h_im, mask=lane_mask)
    tl.store(sum_k_ptr + 2 * cell, sum_k_re, mask=lane_mask)
    tl.store(sum_k_ptr + 2 * cell + 1, sum_k_im, mask=lane_mask)


def _segments_for(batch: int, length: int, dim: int) -> int:
    programs = batch * triton.cdiv(dim, BLOCK_D)
    wanted = max(1, TARGET_PROGRAMS // programs)
    return max(1, min(wanted, length // MIN_SEGMENT))


def _segmentation(batch: int, length: int, dim: int, segments: int | None) -> tuple[int, int]:
    """(segments, segment_len): every segment but the last is `segment_len` tokens long."""
    segments = segments or _segments_for(batch, length, dim)
    segment_len = triton.cdiv(length, segments)
    return triton.cdiv(length, segment_len), segment_len


def _pack(p: torch.Tensor, q: torch.Tensor, g: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The kernels' coefficient operands: float32, complex as (real, imaginary) pairs."""
    return (
        p.float().contiguous(),
        torch.view_as_real(q.to(torch.complex64)).contiguous(),
        torch.view_as_real(g.to(torch.complex64)).contiguous(),
        omega.float().contiguous(),
    )


def _scan(
    x: torch.Tensor,
    y: torch.Tensor,
    h_in: torch.Tensor,
    coeffs: tuple[torch.Tensor, ...],
    segments: int,
    segment_len: int,
    write_y: bool,
) -> torch.Tensor:
    """One launch over [B, S] segments; returns the end states [B, S, D, N] complex64."""
    batch, length, dim = x.shape
    ndim = h_in.shape[-1]
    h_in = torch.view_as_real(h_in.contiguous())
    h_out = torch.empty_like(h_in)
    grid = (triton.cdiv(dim, BLOCK_D), batch * segments)
    _cema_scan_kernel[grid](
        x,
        y,
        h_in,
        h_out,
        *coeffs,
        length,
        dim,
        segments,
        segment_len,
        NDIM=ndim,
        BLOCK_D=BLOCK_D,
        WRITE_Y=write_y,
        num_warps=max(1, BLOCK_D // 32),
    )
    return torch.view_as_complex(h_out)


def _scan_segments(
    x: torch.Tensor,
    y: torch.Tensor,
    h: torch.Tensor,
    packed: tuple[torch.Tensor, ...],
    log_q: torch.Tensor,
    segments: int,
    segment_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Writes y; returns (the end state [B, D, N], the segments' entering states [B, S, D, N])."""
    batch, _, dim = x.shape
    if segments == 1:
        h_out = _scan(x, y, h[:, None], packed, 1, segment_len, True)
        return h_out[:, 0], h[:, None]

    zeros = h.new_zeros(batch, segments, dim, h.shape[-1])
    local_end = _scan(x, y, zeros, packed, segments, segment_len, False)
    q_segment = torch.exp(log_q.to(torch.complex64) * segment_len)
    entering = [h]
    for s in range(segments - 1):
        entering.append(q_segment * entering[-1] + local_end[:, s])
    entering = torch.stack(entering, 1)
    h_out = _scan(x, y, entering, packed, segments, segment_len, True)
    return h_out[:, -1], entering


def _adjoint(
    dy: torch.Tensor,
    x: torch.Tensor,
    dx: torch.Tensor | None,
    a_in: torch.Tensor,
    packed: tuple[torch.Tensor, ...],
    segments: int,
    segment_len: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One launch of the reverse scan over [B, S] segments, writing dx unless it is None. Returns the adjoints
    leaving the segments' starts [B, S, D, N] complex64 and, with dx, the partial sums for p and omega."""
    batch, length, dim = dy.shape
    ndim = a_in.shape[-1]
    a_in = torch.view_as_real(a_in.contiguous())
    a_out = torch.empty_like(a_in)
    grad_p = grad_omega = None
    if dx is not None:
        grad_p = a_in.new_empty(batch, segments, dim, ndim)
        grad_omega = a_in.new_empty(batch, segments, dim)
    grid = (triton.cdiv(dim, BLOCK_D), batch * segments)
    _cema_adjoint_kernel[grid](
        dy,
        x,
        dy if dx is None else dx,
        a_in,
        a_out,
        a_out if grad_p is None else grad_p,
        a_out if grad_omega is None else grad_omega,
        *packed,
        length,
        dim,
        segments,
        segment_len,
        NDIM=ndim,
        BLOCK_D=BLOCK_D,
        WRITE_DX=dx is not None,
        num_warps=max(1, BLOCK_D // 32),
    )
    return torch.view_as_complex(a_out), grad_p, grad_omega


def _tangent(
    x: torch.Tensor,
    dy: torch.Tensor,
    entering: torch.Tensor,
    packed: tuple[torch.Tensor, ...],
    segments: int,
    segment_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One launch of the tangent scan: (k at each segment's end, sum dy h, sum dy k), each [B, S, D, N] complex64."""
    batch, length, dim = x.shape
    ndim = entering.shape[-1]
    h_in = torch.view_as_real(entering.contiguous())
    k_out, sum_h, sum_k = (torch.empty_like(h_in) for _ in range(3))
    grid = (triton.cdiv(dim, BLOCK_D), batch * segments)
    _cema_tangent_kernel[grid](
        x,
        dy,
        h_in,
        k_out,
        sum_h,
        sum_k,
        packed[0],
        packed[1],
        length,
        dim,
        segments,
        segment_len,
        NDIM=ndim,
        BLOCK_D=BLOCK_D,
        num_warps=max(1, BLOCK_D // 32),
    )
    return tuple(torch.view_as_complex(t) for t in (k_out, sum_h, sum_k))


def _cema_backward(
    x: torch.Tensor,
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    entering: torch.Tensor,
    packed: tuple[torch.Tensor, ...],
    log_q: torch.Tensor,
    segments: int,
    segment_len: int,
) -> tuple[torch.Tensor, ...]:
    """Gradients for (x, h_0, p, log_q, g, omega) from those of y and of the end state h_L (None: zero).

    lam_t, the gradient of h_t, runs backwards like the forward's states: pass 1 from zero (from dh in
    the last segment), a chain over segments in torch, pass 2 writing dx and the sums for p and omega.
    The sums for g and q pair dy_t with h_t and with k_t = dh_t/dq, forward quantities: the tangent
    scan recomputes them from the forward's entering states, with k = 0 at each segment's start; the
    entering k_in then adds conj(k_in) a, a being what pass 1 left at that start."""
    batch, length, dim = x.shape
    ndim = entering.shape[-1]
    q, g = torch.view_as_complex(packed[1]), torch.view_as_complex(packed[2])
    a_last = dh if dh is not None else entering.new_zeros(batch, dim, ndim)
    if segments > 1:
        q_segment = torch.exp(log_q * segment_len)
        q_back = q_segment.conj()
        first = torch.cat([a_last.new_zeros(batch, segments - 1, dim, ndim), a_last[:, None]], 1)
        a_local, _, _ = _adjoint(dy, x, None, first, packed, segments, segment_len)
        a_entering = [a_last, a_local[:, -1]]  # the last segment's pass 1 started from the true a_last
        for s in range(segments - 2, 0, -1):
            a_entering.append(q_back * a_entering[-1] + a_local[:, s])
        a_in = torch.stack(a_entering[::-1], 1)
    else:
        a_in = a_last[:, None]
    dx = torch.empty_like(x)
    a_out, grad_p, grad_omega = _adjoint(dy, x, dx, a_in, packed, segments, segment_len)

    k_end, sum_h, sum_k = _tangent(x, dy, entering, packed, segments, segment_len)
    grad_q = (g * sum_k.sum((0, 1))).conj()
    if dh is not None:
        grad_q = grad_q + (dh * k_end[:, -1].conj()).sum(0)
    if segments > 1:
        k_in = [k_end[:, 0]]
        for s in range(1, segments - 1):
            k_in.append(q_segment * k_in[-1] + k_end[:, s])
        grad_q = grad_q + (torch.stack(k_in, 1).conj() * a_local[:, 1:]).sum((0, 1))
    grad_log_q = q.conj() * grad_q
    return dx, a_out[:, 0], grad_p.sum((0, 1)), grad_log_q, sum_h.sum((0, 1)).conj(), grad_omega.sum((0, 1))


class _CemaScan(torch.autograd.Function):
    """The segmented scan as an autograd node over (x, h, p, log_q, g, omega): complex tensors complex64,
    their gradients in PyTorch's convention dL/dRe + i dL/dIm."""

    @staticmethod
    def forward(ctx, x, h, p, log_q, g, omega, segments, segment_len):
        packed = _pack(p, torch.exp(log_q), g, omega)
        y = torch.empty_like(x)
        h_out, entering = _scan_segments(x, y, h, packed, log_q, segments, segment_len)
        ctx.save_for_backward(x, entering, log_q, *packed)
        ctx.segments, ctx.segment_len = segments, segment_len
        ctx.set_materialize_grads(False)
        return y, h_out

    @staticmethod
    def backward(ctx, dy, dh):
        x, entering, log_q, *packed = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        grads = _cema_backward(x, dy, dh, entering, tuple(packed), log_q, ctx.segments, ctx.segment_len)
        return *grads, None, None


def _check_ndim(ndim: int) -> None:
    if ndim & (ndim - 1):
        raise ValueError(f"cema_triton needs a power-of-two cema_ndim, got {ndim}")


def cema_triton(
    x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor | None = None, segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CEMA over a span: x [B, L, D] -> (y [B, L, D] in x's dtype, h [B, D, N] complex64).

    `segments` splits the time axis for parallelism (default: enough to fill the GPU). Records no
    gradient: `cema_triton_autograd` is the differentiable form."""
    batch, length, dim = x.shape
    ndim = coeffs.p.shape[1]
    _check_ndim(ndim)
    if h is None:
        h = torch.zeros(batch, dim, ndim, dtype=torch.complex64, device=x.device)
    x = x.contiguous()
    y = torch.empty_like(x)
    if length == 0:
        return y, h
    packed = _pack(coeffs.p, coeffs.q, coeffs.g, coeffs.omega)
    segments, segment_len = _segmentation(batch, length, dim, segments)
    h_out, _ = _scan_segments(x, y, h.to(torch.complex64), packed, coeffs.log_q, segments, segment_len)
    return y, h_out


def cema_triton_autograd(
    x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor | None = None, segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`cema_triton` recording a gradient for x, h and the coefficients' tensors (`_CemaScan`); the same y and h."""
    batch, length, dim = x.shape
    ndim = coeffs.p.shape[1]
    _check_ndim(ndim)
    if h is None:
        h = torch.zeros(batch, dim, ndim, dtype=torch.complex64, device=x.device)
    if length == 0:
        return torch.empty_like(x), h
    segments, segment_len = _segmentation(batch, length, dim, segments)
    return _CemaScan.apply(
        x.contiguous(),
        h.to(torch.complex64),
        coeffs.p.float(),
        coeffs.log_q.to(torch.complex64),
        coeffs.g.to(torch.complex64),
        coeffs.omega.float(),
        segments,
        segment_len,
    )


def cema_step_triton(x: torch.Tensor, coeffs: CemaCoefficients, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step in one launch: x [B, D] -> (y [B, D], new h [B, D, N])."""
    y, h = cema_triton(x[:, None], coeffs, h, segments=1)
    return y[:, 0], h
