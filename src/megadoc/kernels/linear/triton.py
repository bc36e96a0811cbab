"""`fused_linear` (kernels/linear.py) for 1 to 16 rows: one pass over the weights with the
neighbours fused in; `fused_linear_grouped` (several weights that read the same x) in one launch.

Each program owns BLOCK_N output features and walks K in BLOCK_K steps: it loads the rows' x tile
(times `scale`, rounded to x's dtype as the reference rounds the gated input), the weight tile
[BLOCK_N, BLOCK_K] (and `up`'s), and accumulates x @ W.T in float32 on the matrix units (the rows
are padded to one 16-row tile: free, the step is bound by the weight bytes). The epilogue adds the
bias, applies SiLU, multiplies by the up projection, adds the residual, and rounds once.

Int8 weights (INT8_WEIGHTS, from `quantize_per_channel`): each tile is converted to x's dtype after
its load (exact: |w| <= 127) and the dot runs as for bf16; the per-row scale multiplies the float32
sum after the K loop (acc[:, n] * scale[n], and acc_up's by up's scale): one multiply per output,
none per weight, and half the weight bytes.

Grouped (`LinearGroup`: the weights concatenated once, [N1 + ... + Ns, K]): the same kernel over
all the rows of the concatenation, with the bias concatenated (zeros where a segment has none) and
two column ranges for the epilogue: SiLU applies to [silu_start, silu_end) (the adjacent segments
that take it), the residual, shaped like its segment's output, is added to [res_start, res_end).
A single linear is the group of one (both ranges [0, N)). One launch instead of s: each launch pays
~3.6 us of ramp and tail whatever its size (KERNELS-NOTES.md), and a small read (wz's 8 MB) gets too
few programs to reach the bandwidth alone.

Bytes: the weights once (N x K x 2 per matrix; N x K + 4 N in int8), x once per program from L2,
the output once. The weight tiles stream through `num_stages` buffers (software pipelining of the
dot's loads), which keeps enough bytes in flight for each SM to reach the copy bandwidth. Tiles per
shape: `_tiles`, chosen by the sweep in `python -m benchmarks.speed --parts decode_kernels`
(KERNELS-NOTES.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from megadoc.kernels.linear.reference import LinearGroup, segment_residuals

BLOCK_M = 16  # rows per tile: the matrix units' smallest


@triton.jit
def _dot_t(x, w, UPCAST_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """x @ w.T in float32; an int8 w is converted to x's dtype (exact: |w| <= 127). Off CUDA (the
    CPU interpreter, for tests) the operands are float32: triton 3.9's interpreter multiplies bf16
    operands as their raw 16-bit integers."""
    if UPCAST_DOT:
        x, w = x.to(tl.float32), w.to(tl.float32)
    else:
        w = w.to(x.dtype)
    return tl.dot(x, tl.trans(w), input_precision=PRECISION)


@triton.jit
def _fused_linear_kernel(
    x_ptr,  # [M, K]
    scale_ptr,  # [M, K] (read when HAS_SCALE)
    w_ptr,  # [N, K]
    up_ptr,  # [N, K] (read when HAS_UP)
    w_scale_ptr,  # [N] float32 (read when INT8_WEIGHTS)
    up_scale_ptr,  # [N] float32 (read when INT8_WEIGHTS and HAS_UP)
    bias_ptr,  # [N] (read when HAS_BIAS)
    res_ptr,  # [M, res_end - res_start] (read when HAS_RES)
    y_ptr,  # [M, N]
    rows,
    n,
    k,
    silu_start,  # SiLU's columns [silu_start, silu_end) (when SILU)
    silu_end,
    res_start,  # the residual's columns [res_start, res_end) (when HAS_RES)
    res_end,
    stride_xm,
    stride_sm,
    stride_w,
    stride_up,
    stride_rm,
    stride_ym,
    HAS_SCALE: tl.constexpr,
    HAS_UP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
    SILU: tl.constexpr,
    INT8_WEIGHTS: tl.constexpr,
    EVEN_K: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Program i: output features [i * BLOCK_N, (i + 1) * BLOCK_N) of every row."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < rows
    n_mask = offs_n < n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        cols = k0 + offs_k
        x_mask = m_mask[:, None] if EVEN_K else m_mask[:, None] & (cols[None, :] < k)
        w_mask = n_mask[:, None] if EVEN_K else n_mask[:, None] & (cols[None, :] < k)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :], mask=x_mask, other=0.0)
        if HAS_SCALE:
            s = tl.load(scale_ptr + offs_m[:, None] * stride_sm + cols[None, :], mask=x_mask, other=0.0)
            x = (x.to(tl.float32) * s.to(tl.float32)).to(x.dtype)
        w = tl.load(w_ptr + offs_n[:, None] * stride_w + cols[None, :], mask=w_mask, other=0.0)
        acc += _dot_t(x, w, UPCAST_DOT, PRECISION)
        if HAS_UP:
            u = tl.load(up_ptr + offs_n[:, None] * stride_up + cols[None, :], mask=w_mask, other=0.0)
            acc_up += _dot_t(x, u, UPCAST_DOT, PRECISION)
    if INT8_WEIGHTS:
        acc *= tl.load(w_scale_ptr + offs_n, mask=n_mask, other=0.0)[None, :]
        if HAS_UP:
            acc_up *= tl.load(up_scale_ptr + offs_n, mask=n_mask, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if SILU:
        silu_cols = (offs_n >= silu_start) & (offs_n < silu_end)
        acc = tl.where(silu_cols[None, :], acc * tl.sigmoid(acc), acc)
    if HAS_UP:
        acc = acc * acc_up
    out_mask = m_mask[:, None] & n_mask[None, :]
    if HAS_RES:
        res_mask = out_mask & ((offs_n >= res_start) & (offs_n < res_end))[None, :]
        res = tl.load(res_ptr + offs_m[:, None] * stride_rm + (offs_n - res_start)[None, :], mask=res_mask, other=0.0)
        acc += res.to(tl.float32)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=out_mask)


def _tiles(n: int, k: int, on_gpu: bool, int8: bool = False) -> dict[str, int]:
    """Default tiles, from the H100 sweep at the 7B's shapes (KERNELS-NOTES.md, run 4): 32 features
    per program from N = 4096 (the gated 4096 x 8192 read: 28.0 us vs 34.4 with 16), 16 and longer
    K steps below (the 1024 x 4096 read: 8.1 us vs 10.1). Int8 weights: the same tiles with twice the
    buffers, to keep as many weight bytes in flight (a prediction until swept). Under the interpreter
    (CPU): small tiles, the loops are Python."""
    if not on_gpu:
        return {"block_n": 16, "block_k": 32, "num_warps": 4, "num_stages": 1}
    buffers = 2 if int8 else 1
    if n >= 4096:
        return {"block_n": 32, "block_k": 256, "num_warps": 4, "num_stages": 4 * buffers}
    return {"block_n": 16, "block_k": 512, "num_warps": 4, "num_stages": 3 * buffers}


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as [M, last] with the last dim contiguous (a view when it can be)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    silu_cols: tuple[int, int] | None,
    up: torch.Tensor | None,
    scale: torch.Tensor | None,
    residual: torch.Tensor | None,
    res_cols: tuple[int, int],
    weight_scale: torch.Tensor | None,
    up_scale: torch.Tensor | None,
    tiles: dict[str, int],
) -> torch.Tensor:
    """The kernel over x [..., K] and weight [N, K]: y [..., N], SiLU on the columns `silu_cols` (None:
    none), `residual` [..., res_end - res_start] added to the columns `res_cols`."""
    n, k = weight.shape
    lead = x.shape[:-1]
    x2 = _rows(x)
    rows = x2.shape[0]
    if rows > BLOCK_M:
        raise ValueError(f"fused_linear_triton takes at most {BLOCK_M} rows, got {rows}")
    int8 = weight.dtype == torch.int8
    if int8 and (weight_scale is None or (up is not None and (up.dtype != torch.int8 or up_scale is None))):
        raise ValueError("int8 weights need their per-row scales (and an int8 up projection)")
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    up = None if up is None else (up if up.stride(-1) == 1 else up.contiguous())
    s2 = None if scale is None else _rows(scale.expand_as(x))
    r2 = None if residual is None else _rows(residual)
    y = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    config = _tiles(n, k, x.is_cuda, int8) | tiles
    _fused_linear_kernel[(triton.cdiv(n, config["block_n"]),)](
        x2,
        x2 if s2 is None else s2,
        weight,
        weight if up is None else up,
        weight_scale if int8 else y,
        up_scale if int8 and up is not None else y,
        weight if bias is None else bias,
        y if r2 is None else r2,
        y,
        rows,
        n,
        k,
        *(silu_cols or (0, 0)),
        *res_cols,
        x2.stride(0),
        0 if s2 is None else s2.stride(0),
        weight.stride(0),
        0 if up is None else up.stride(0),
        0 if r2 is None else r2.stride(0),
        y.stride(0),
        HAS_SCALE=s2 is not None,
        HAS_UP=up is not None,
        HAS_BIAS=bias is not None,
        HAS_RES=r2 is not None,
        SILU=silu_cols is not None,
        INT8_WEIGHTS=int8,
        EVEN_K=k % config["block_k"] == 0,
        UPCAST_DOT=not x.is_cuda,
        PRECISION="ieee" if x.dtype == torch.float32 or not x.is_cuda else "tf32",
        BLOCK_M=BLOCK_M,
        BLOCK_N=config["block_n"],
        BLOCK_K=config["block_k"],
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
    )
    return y.view(*lead, n)


def fused_linear_triton(
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
    **tiles: int,
) -> torch.Tensor:
    """`fused_linear` for x [..., K] with at most 16 rows; int8 weight (and up) with their float32
    per-row scales [N]; `tiles` overrides block_n, block_k, num_warps and num_stages."""
    n = weight.shape[0]
    return _launch(
        x,
        weight,
        bias,
        silu_cols=(0, n) if silu else None,
        up=up,
        scale=scale,
        residual=residual,
        res_cols=(0, n),
        weight_scale=weight_scale,
        up_scale=up_scale,
        tiles=tiles,
    )


def fused_linear_grouped_triton(
    x: torch.Tensor, group: LinearGroup, residuals: Sequence[torch.Tensor | None] | None = None, **tiles: int
) -> tuple[torch.Tensor, ...]:
    """`fused_linear_grouped` for x [..., K] with at most 16 rows, in one launch: the segments'
    outputs are views of one [..., N1 + ... + Ns] tensor."""
    residuals = segment_residuals(group, residuals)
    bounds = group.bounds
    taking = [i for i, r in enumerate(residuals) if r is not None]
    y = _launch(
        x,
        group.weight,
        group.bias,
        silu_cols=group.silu_columns,
        up=None,
        scale=None,
        residual=residuals[taking[0]] if taking else None,
        res_cols=bounds[taking[0]] if taking else (0, 0),
        weight_scale=group.weight_scale,
        up_scale=None,
        tiles=tiles,
    )
    return tuple(y[..., start:end] for start, end in bounds)
