"""Chunk-local causal attention on the GPU: the same function as `chunk_attention` in kernels/attention.py.

q [B, Tq, h, dk], k [B, Tk, h, dk], v [B, Tk, h, dv]; the queries are the LAST Tq of the Tk key
positions (the decoding cache); scale 1; softmax in float32.

Two implementations:
- `chunk_attention_triton`: a flash-attention kernel. One program owns BLOCK_M queries of one
  (batch, head) and one BLOCK_DV-wide slice of the value dim (the 7B's dv = 2048 does not fit one
  accumulator), walks the keys up to its causal limit in blocks of BLOCK_N with an online softmax
  (running max and sum in float32), and writes its output slice once. Every value slice recomputes
  q k^T, so it does dv / BLOCK_DV times the q k^T work; scores never touch device memory.
  Off CUDA (the CPU interpreter, for tests) the dots take float32 operands: triton 3.9's
  interpreter multiplies bf16 operands as their raw 16-bit integers.
- `chunk_attention_sdpa`: torch's scaled_dot_product_attention with the causal mask aligned to the
  bottom right (the queries' offset), scale 1.

Training (`chunk_attention_autograd`, an autograd.Function): the forward is the flash kernel with
STORE_LSE, which also writes each query row's log-sum-exp (float32, B * h * Tq * 4 bytes: the only
memory the backward adds to its inputs and output); without it the kernel compiles as before. The
backward is FlashAttention-2's, in four launches that recompute P = exp(q k^T - lse) from the same
float32-accumulated scores as the forward and never write it to device memory:
- delta = rowsum(dO * O) in float32, program (query block, batch x head);
- dV = P^T dO, program (value slice, key block, batch x head) walking the query blocks that see its
  keys; P cast to v's dtype as in the forward. Like the forward, every value slice recomputes q k^T;
- dK = dS^T q with dS = P * (dO v^T - delta), program (key block, batch x head) over the same query
  blocks, summing dO v^T over value chunks (dv is too wide for one tile, and dP needs all of it);
- dQ = dS k, program (query block, batch x head) walking its keys, the same way.
dK and dQ both recompute dO v^T: the price of writing every gradient once, without atomics, when the
value dim is too wide for dK and dV to share a program. Per causal score that is
dk x (value slices + 4) + 3 dv multiply-adds (FlashAttention-2 does 3 dk + 2 dv; the reference's
autograd 2 dk + 2 dv for every score, masked or not, plus float32 scores and probabilities written
and read). dS is cast to k's (q's) dtype for its products; every product accumulates in float32.

`decode_attention_triton` is the decoding step (`decode_attention` in kernels/attention.py): one
query per (batch, head) over the valid slots of a chunk's fixed-size key/value buffers, split-K
("flash decoding") so that batch 1 with 4 heads still spreads over the GPU. Program (value slice,
key split, batch x head) reads the index of the last valid slot from device memory, returns at once
when its split holds no valid slot, and otherwise keeps an online softmax over its keys in float32;
a second kernel merges the splits' partial outputs. The value slices of one split each recompute
its scores (one query: dk multiply-adds per key; the repeated key reads mostly hit L2). Deviations
from the reference, all within bf16 rounding: scores stay float32 (the reference rounds q k^T to the
inputs' dtype), and the probabilities cast to v's dtype are exp(s - the split's running max), not
the final normalized ones (as in the chunk kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.nn.attention.bias import causal_lower_right


@triton.jit
def _chunk_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    lse_ptr,  # [B * h, Tq] float32: each query row's log-sum-exp of its scores, written when STORE_LSE
    tq,
    tk,
    heads,
    dk,
    dv,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_ob,
    stride_ot,
    stride_oh,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    STORE_LSE: tl.constexpr,
):
    """Program (value slice, query block, batch x head): o[block, slice] = softmax(q k^T) v[:, slice]."""
    pid_v = tl.program_id(0)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)  # the longest (last) query blocks start first
    pid_bh = tl.program_id(2)
    batch = pid_bh // heads
    head = pid_bh % heads

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < tq
    query_pos = rows + (tk - tq)
    kd = tl.arange(0, BLOCK_DK)
    vd = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    kd_mask = kd < dk
    vd_mask = vd < dv

    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head * stride_qh
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + head * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + head * stride_vh
    q = tl.load(q_base + rows[:, None] * stride_qt + kd[None, :], mask=row_mask[:, None] & kd_mask[None, :], other=0.0)

    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    key_stop = tl.minimum(tk, (pid_m + 1) * BLOCK_M + (tk - tq))
    for start in range(0, key_stop, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        key_mask = keys < tk
        k_mask = key_mask[:, None] & kd_mask[None, :]
        k = tl.load(k_base + keys[:, None] * stride_kt + kd[None, :], mask=k_mask, other=0.0)
        if UPCAST_DOT:
            scores = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision=PRECISION)
        else:
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        scores = tl.where((keys[None, :] <= query_pos[:, None]) & key_mask[None, :], scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.exp(row_max - new_max)
        probs = tl.exp(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(probs, axis=1)
        v_mask = key_mask[:, None] & vd_mask[None, :]
        v = tl.load(v_base + keys[:, None] * stride_vt + vd[None, :], mask=v_mask, other=0.0)
        probs = probs.to(v.dtype)
        if UPCAST_DOT:
            acc = acc * rescale[:, None] + tl.dot(probs.to(tl.float32), v.to(tl.float32), input_precision=PRECISION)
        else:
            acc = acc * rescale[:, None] + tl.dot(probs, v, input_precision=PRECISION)
        row_max = new_max

    if STORE_LSE:  # before the output (after it, sm_90 spills ~4x the registers at the mini's shape)
        if pid_v == 0:  # every value slice has the same statistics: the first one writes them
            tl.store(lse_ptr + pid_bh.to(tl.int64) * tq + rows, row_max + tl.log(row_sum), mask=row_mask)
    out = acc / row_sum[:, None]
    o_base = o_ptr + batch.to(tl.int64) * stride_ob + head * stride_oh
    tl.store(
        o_base + rows[:, None] * stride_ot + vd[None, :],
        out.to(o_ptr.dtype.element_ty),
        mask=row_mask[:, None] & vd_mask[None, :],
    )


def _default_blocks(tq: int, dv: int, is_cuda: bool) -> dict[str, int]:
    if not is_cuda:  # the CPU interpreter: small tiles
        return {
            "block_m": 16,
            "block_n": 16,
            "block_dv": min(32, triton.next_power_of_2(dv)),
            "num_warps": 4,
            "num_stages": 1,
        }
    if tq <= 16:  # decoding: a query or a few, long key range
        return {
            "block_m": 16,
            "block_n": 64,
            "block_dv": min(256, triton.next_power_of_2(dv)),
            "num_warps": 4,
            "num_stages": 2,
        }
    # Measured on the H100 at the 7B's shapes (benchmarks/KERNELS-NOTES.md): value slices of 256 halve the
    # recomputed q k^T of slices of 128 and still fit 8 warps' registers.
    return {
        "block_m": 128,
        "block_n": 64,
        "block_dv": min(256, triton.next_power_of_2(dv)),
        "num_warps": 8,
        "num_stages": 2,
    }


def _unit_last_stride(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The kernels take every stride but the last, which must be 1: copies of the tensors without it."""
    return tuple(t if t.stride(-1) == 1 else t.contiguous() for t in tensors)


def _precision(q: torch.Tensor) -> str:
    """The dots' input precision: IEEE for float32 q and under the interpreter, else tf32, which only
    float32 operands use (none unless v is float32 and q is not)."""
    return "ieee" if q.dtype == torch.float32 or not q.is_cuda else "tf32"


def _launch_chunk_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor | None, blocks: dict[str, int]
) -> torch.Tensor:
    """The forward kernel on tensors of unit last stride; also fills `lse` [B * h, Tq] unless it is None."""
    batch, tq, heads, dk = q.shape
    tk, dv = k.shape[1], v.shape[-1]
    out = torch.empty(batch, tq, heads, dv, dtype=v.dtype, device=v.device)
    if tq == 0:
        return out
    config = _default_blocks(tq, dv, q.is_cuda) | blocks
    grid = (triton.cdiv(dv, config["block_dv"]), triton.cdiv(tq, config["block_m"]), batch * heads)
    _chunk_attention_kernel[grid](
        q,
        k,
        v,
        out,
        lse,
        tq,
        tk,
        heads,
        dk,
        dv,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        BLOCK_M=config["block_m"],
        BLOCK_N=config["block_n"],
        BLOCK_DK=max(16, triton.next_power_of_2(dk)),
        BLOCK_DV=config["block_dv"],
        PRECISION=_precision(q),
        UPCAST_DOT=not q.is_cuda,
        STORE_LSE=lse is not None,
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
    )
    return out


def chunk_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **blocks: int) -> torch.Tensor:
    """q [B, Tq, h, dk], k [B, Tk, h, dk], v [B, Tk, h, dv] with Tq <= Tk -> [B, Tq, h, dv] in v's dtype.

    `blocks` overrides the tile sizes (block_m, block_n, block_dv, num_warps, num_stages)."""
    return _launch_chunk_attention(*_unit_last_stride(q, k, v), None, blocks)


def chunk_attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same through torch's scaled_dot_product_attention (whichever backend accepts the shapes)."""
    tq, tk = q.shape[1], k.shape[1]
    mask = None if tq == tk else causal_lower_right(tq, tk)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=tq == tk, scale=1.0
    )
    return out.transpose(1, 2)


# -- the backward: chunk attention in training ---------------------------------------------------


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """a @ b accumulated in float32; with UPCAST_DOT (the interpreter) on float32 copies of the operands."""
    if UPCAST_DOT:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _attention_delta_kernel(
    o_ptr,
    do_ptr,  # [B, Tq, h, dv]
    delta_ptr,  # [B * h, Tq] float32
    tq,
    heads,
    dv,
    stride_ob,
    stride_ot,
    stride_oh,
    stride_gb,
    stride_gt,
    stride_gh,
    BLOCK_M: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Program (query block, batch x head): delta = the rows' sum of dO * O, in float32."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = pid_bh // heads
    head = pid_bh % heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < tq
    o_base = o_ptr + batch.to(tl.int64) * stride_ob + head * stride_oh
    do_base = do_ptr + batch.to(tl.int64) * stride_gb + head * stride_gh
    delta = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, dv, BLOCK_DV):
        vd = start + tl.arange(0, BLOCK_DV)
        mask = row_mask[:, None] & (vd < dv)[None, :]
        o = tl.load(o_base + rows[:, None] * stride_ot + vd[None, :], mask=mask, other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_gt + vd[None, :], mask=mask, other=0.0)
        delta += tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + pid_bh.to(tl.int64) * tq + rows, delta, mask=row_mask)


@triton.jit
def _attention_dkdv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,  # [B * h, Tq] float32
    grad_ptr,  # dK (GRAD_K) or dV, like k or v
    tq,
    tk,
    heads,
    dk,
    dv,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_gb,
    stride_gt,
    stride_gh,
    stride_rb,
    stride_rt,
    stride_rh,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    GRAD_K: tl.constexpr,
):
    """Program (value slice, key block, batch x head): walks the query blocks that see the key block,
    recomputing P^T = exp(k q^T - lse). GRAD_K (one slice): dK[block] = sum dS^T q, where
    dS^T = P^T * (v dO^T - delta) and v dO^T sums over BLOCK_DV-wide value chunks. Else
    dV[block, slice] = sum P^T dO[:, slice], P cast to v's dtype as the forward does."""
    pid_v = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_bh = tl.program_id(2)
    batch = pid_bh // heads
    head = pid_bh % heads
    offset = tk - tq  # query row i sits at key position i + offset

    keys = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    key_mask = keys < tk
    kd = tl.arange(0, BLOCK_DK)
    kd_mask = kd < dk
    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head * stride_qh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + head * stride_vh
    do_base = do_ptr + batch.to(tl.int64) * stride_gb + head * stride_gh
    stats = pid_bh.to(tl.int64) * tq
    k = tl.load(
        k_ptr + batch.to(tl.int64) * stride_kb + head * stride_kh + keys[:, None] * stride_kt + kd[None, :],
        mask=key_mask[:, None] & kd_mask[None, :],
        other=0.0,
    )
    if GRAD_K:
        cols = kd
        col_mask = kd_mask
        acc = tl.zeros([BLOCK_N, BLOCK_DK], tl.float32)
    else:
        cols = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
        col_mask = cols < dv
        acc = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)

    first = tl.maximum(pid_n * BLOCK_N - offset, 0) // BLOCK_M * BLOCK_M  # the first query block seeing a key
    for start in range(first, tq, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_mask = rows < tq
        q = tl.load(
            q_base + rows[:, None] * stride_qt + kd[None, :], mask=row_mask[:, None] & kd_mask[None, :], other=0.0
        )
        lse = tl.load(lse_ptr + stats + rows, mask=row_mask, other=0.0)
        scores_t = _dot(k, tl.trans(q), PRECISION, UPCAST_DOT)  # [BLOCK_N, BLOCK_M]
        seen = (keys[:, None] <= rows[None, :] + offset) & key_mask[:, None] & row_mask[None, :]
        probs_t = tl.where(seen, tl.exp(scores_t - lse[None, :]), 0.0)
        if GRAD_K:
            dp_t = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
            for chunk in range(0, dv, BLOCK_DV):
                vd = chunk + tl.arange(0, BLOCK_DV)
                vd_mask = vd < dv
                v = tl.load(
                    v_base + keys[:, None] * stride_vt + vd[None, :],
                    mask=key_mask[:, None] & vd_mask[None, :],
                    other=0.0,
                )
                do = tl.load(
                    do_base + rows[:, None] * stride_gt + vd[None, :],
                    mask=row_mask[:, None] & vd_mask[None, :],
                    other=0.0,
                )
                dp_t += _dot(v, tl.trans(do), PRECISION, UPCAST_DOT)
            delta = tl.load(delta_ptr + stats + rows, mask=row_mask, other=0.0)
            ds_t = probs_t * (dp_t - delta[None, :])
            acc += _dot(ds_t.to(q.dtype), q, PRECISION, UPCAST_DOT)
        else:
            do = tl.load(
                do_base + rows[:, None] * stride_gt + cols[None, :],
                mask=row_mask[:, None] & col_mask[None, :],
                other=0.0,
            )
            acc += _dot(probs_t.to(grad_ptr.dtype.element_ty), do, PRECISION, UPCAST_DOT)

    grad_base = grad_ptr + batch.to(tl.int64) * stride_rb + head * stride_rh
    tl.store(
        grad_base + keys[:, None] * stride_rt + cols[None, :],
        acc.to(grad_ptr.dtype.element_ty),
        mask=key_mask[:, None] & col_mask[None, :],
    )


@triton.jit
def _attention_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,  # [B * h, Tq] float32
    dq_ptr,  # like q
    tq,
    tk,
    heads,
    dk,
    dv,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_gb,
    stride_gt,
    stride_gh,
    stride_rb,
    stride_rt,
    stride_rh,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    """Program (query block, batch x head): walks the keys up to its causal limit, recomputing
    P = exp(q k^T - lse): dQ[block] = sum dS k, where dS = P * (dO v^T - delta) and dO v^T sums over
    BLOCK_DV-wide value chunks."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # the longest (last) query blocks start first
    pid_bh = tl.program_id(1)
    batch = pid_bh // heads
    head = pid_bh % heads
    offset = tk - tq

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < tq
    kd = tl.arange(0, BLOCK_DK)
    kd_mask = kd < dk
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + head * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + head * stride_vh
    do_base = do_ptr + batch.to(tl.int64) * stride_gb + head * stride_gh
    stats = pid_bh.to(tl.int64) * tq
    q = tl.load(
        q_ptr + batch.to(tl.int64) * stride_qb + head * stride_qh + rows[:, None] * stride_qt + kd[None, :],
        mask=row_mask[:, None] & kd_mask[None, :],
        other=0.0,
    )
    lse = tl.load(lse_ptr + stats + rows, mask=row_mask, other=0.0)
    delta = tl.load(delta_ptr + stats + rows, mask=row_mask, other=0.0)

    acc = tl.zeros([BLOCK_M, BLOCK_DK], tl.float32)
    key_stop = tl.minimum(tk, (pid_m + 1) * BLOCK_M + offset)
    for start in range(0, key_stop, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        key_mask = keys < tk
        k = tl.load(
            k_base + keys[:, None] * stride_kt + kd[None, :], mask=key_mask[:, None] & kd_mask[None, :], other=0.0
        )
        scores = _dot(q, tl.trans(k), PRECISION, UPCAST_DOT)  # [BLOCK_M, BLOCK_N]
        seen = (keys[None, :] <= rows[:, None] + offset) & key_mask[None, :] & row_mask[:, None]
        probs = tl.where(seen, tl.exp(scores - lse[:, None]), 0.0)
        dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for chunk in range(0, dv, BLOCK_DV):
            vd = chunk + tl.arange(0, BLOCK_DV)
            vd_mask = vd < dv
            do = tl.load(
                do_base + rows[:, None] * stride_gt + vd[None, :], mask=row_mask[:, None] & vd_mask[None, :], other=0.0
            )
            v = tl.load(
                v_base + keys[:, None] * stride_vt + vd[None, :], mask=key_mask[:, None] & vd_mask[None, :], other=0.0
            )
            dp += _dot(do, tl.trans(v), PRECISION, UPCAST_DOT)
        ds = probs * (dp - delta[:, None])
        acc += _dot(ds.to(k.dtype), k, PRECISION, UPCAST_DOT)

    dq_base = dq_ptr + batch.to(tl.int64) * stride_rb + head * stride_rh
    tl.store(
        dq_base + rows[:, None] * stride_rt + kd[None, :],
        acc.to(dq_ptr.dtype.element_ty),
        mask=row_mask[:, None] & kd_mask[None, :],
    )


def _backward_blocks(dk: int, dv: int, is_cuda: bool) -> dict[str, int]:
    """Tiles of the backward kernels: block_m queries, block_n keys; block_dv is the value slice of a
    dV program, block_dp the value chunk that dK's and dQ's programs sum dO v^T over."""
    dv_tile = max(16, triton.next_power_of_2(dv))  # tl.dot takes no dim under 16
    if not is_cuda:  # the CPU interpreter: small tiles
        return {
            "block_m": 16,
            "block_n": 16,
            "block_dv": min(32, dv_tile),
            "block_dp": min(32, dv_tile),
            "num_warps": 4,
            "num_stages": 1,
        }
    # Not timed yet: the largest tiles that sm_90 compiles without spilling registers at the mini's
    # (dk 64, dv 384) and the 7B's (dk 256, dv 2048) head dims. Value slices of 256 halve the recomputed
    # q k^T of slices of 128; the mini's dv = 384 is three slices of 128 (two of 256 would mask a quarter).
    block_dv = min(256 if dv % 256 == 0 else 128, dv_tile)
    if dk <= 64:
        return {
            "block_m": 64,
            "block_n": 64,
            "block_dv": block_dv,
            "block_dp": min(64, dv_tile),
            "num_warps": 8,
            "num_stages": 2,
        }
    return {
        "block_m": 64,
        "block_n": 32,
        "block_dv": block_dv,
        "block_dp": min(32, dv_tile),
        "num_warps": 8,
        "num_stages": 2,
    }


def chunk_attention_backward_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    grad: torch.Tensor,
    **blocks: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of chunk attention for the output gradient `grad` [B, Tq, h, dv], given the
    forward's inputs, output `out` and log-sum-exp `lse` [B * h, Tq]; each in its input's dtype.

    `blocks` overrides the tiles and launch settings of `_backward_blocks`."""
    q, k, v, out, grad = _unit_last_stride(q, k, v, out, grad)
    batch, tq, heads, dk = q.shape
    tk, dv = k.shape[1], v.shape[-1]
    grad_q, grad_k, grad_v = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    if tq == 0:
        return grad_q, grad_k.zero_(), grad_v.zero_()
    config = _backward_blocks(dk, dv, q.is_cuda) | blocks
    block_m, block_n, bh = config["block_m"], config["block_n"], batch * heads
    launch = {"num_warps": config["num_warps"], "num_stages": config["num_stages"]}
    dots = {"PRECISION": _precision(q), "UPCAST_DOT": not q.is_cuda}
    block_dk = max(16, triton.next_power_of_2(dk))

    delta = torch.empty(bh, tq, dtype=torch.float32, device=q.device)
    _attention_delta_kernel[(triton.cdiv(tq, block_m), bh)](
        out,
        grad,
        delta,
        tq,
        heads,
        dv,
        out.stride(0),
        out.stride(1),
        out.stride(2),
        grad.stride(0),
        grad.stride(1),
        grad.stride(2),
        BLOCK_M=block_m,
        BLOCK_DV=config["block_dp"],
        **launch,
    )
    inputs = (q, k, v, grad, lse, delta)
    strides = (
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        grad.stride(0),
        grad.stride(1),
        grad.stride(2),
    )
    key_blocks = triton.cdiv(tk, block_n)
    _attention_dkdv_kernel[(1, key_blocks, bh)](
        *inputs,
        grad_k,
        tq,
        tk,
        heads,
        dk,
        dv,
        *strides,
        grad_k.stride(0),
        grad_k.stride(1),
        grad_k.stride(2),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_DK=block_dk,
        BLOCK_DV=config["block_dp"],
        GRAD_K=True,
        **dots,
        **launch,
    )
    _attention_dkdv_kernel[(triton.cdiv(dv, config["block_dv"]), key_blocks, bh)](
        *inputs,
        grad_v,
        tq,
        tk,
        heads,
        dk,
        dv,
        *strides,
        grad_v.stride(0),
        grad_v.stride(1),
        grad_v.stride(2),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_DK=block_dk,
        BLOCK_DV=config["block_dv"],
        GRAD_K=False,
        **dots,
        **launch,
    )
    _attention_dq_kernel[(triton.cdiv(tq, block_m), bh)](
        *inputs,
        grad_q,
        tq,
        tk,
        heads,
        dk,
        dv,
        *strides,
        grad_q.stride(0),
        grad_q.stride(1),
        grad_q.stride(2),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_DK=block_dk,
        BLOCK_DV=config["block_dp"],
        **dots,
        **launch,
    )
    return grad_q, grad_k, grad_v


class _ChunkAttention(torch.autograd.Function):
    """Chunk attention with Triton kernels both ways: the forward keeps each query row's log-sum-exp
    (float32, [B * h, Tq]) beside its inputs and output, from which the backward recomputes P."""

    @staticmethod
    def forward(ctx, q, k, v, blocks):
        q, k, v = _unit_last_stride(q, k, v)
        lse = torch.empty(q.shape[0] * q.shape[2], q.shape[1], dtype=torch.float32, device=q.device)
        out = _launch_chunk_attention(q, k, v, lse, {})
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.blocks = blocks
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved_tensors
        return *chunk_attention_backward_triton(q, k, v, out, lse, grad, **ctx.blocks), None


def chunk_attention_autograd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **blocks: int) -> torch.Tensor:
    """`chunk_attention_triton` recorded for autograd, with the Triton backward; `blocks` overrides the
    backward's tiles (see `_backward_blocks`)."""
    return _ChunkAttention.apply(q, k, v, blocks)


@triton.jit
def _decode_attention_kernel(
    q_ptr,  # [B, 1, h, dk]
    k_ptr,  # [B, h, C, dk]
    v_ptr,  # [B, h, C, dv]
    last_ptr,  # [1] int64: the last valid slot
    part_ptr,  # [B * h, S, dv] float32: each split's unnormalized output
    max_ptr,  # [B * h, S] float32: each split's score maximum
    sum_ptr,  # [B * h, S] float32: each split's sum of exp(score - maximum)
    heads,
    dk,
    dv,
    splits,
    split_len,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_kc,
    stride_vb,
    stride_vh,
    stride_vc,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Program (value slice, split, batch x head): the split's valid keys against one value slice."""
    pid_v = tl.program_id(0)
    split = tl.program_id(1)
    bh = tl.program_id(2)
    batch = bh // heads
    head = bh % heads
    valid = tl.load(last_ptr) + 1
    start = split * split_len
    if start < valid:
        stop = tl.minimum(start + split_len, valid)
        kd = tl.arange(0, BLOCK_DK)
        vd = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
        kd_mask = kd < dk
        vd_mask = vd < dv
        q = tl.load(q_ptr + batch.to(tl.int64) * stride_qb + head * stride_qh + kd, mask=kd_mask, other=0.0)
        q = q.to(tl.float32)
        k_base = k_ptr + batch.to(tl.int64) * stride_kb + head * stride_kh
        v_base = v_ptr + batch.to(tl.int64) * stride_vb + head * stride_vh
        run_max = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), axis=0)
        run_sum = tl.sum(tl.zeros([BLOCK_N], tl.float32), axis=0)
        acc = tl.zeros([BLOCK_DV], tl.float32)
        for n0 in range(start, stop, BLOCK_N):
            keys = n0 + tl.arange(0, BLOCK_N)
            key_mask = keys < stop
            k = tl.load(
                k_base + keys[:, None] * stride_kc + kd[None, :], mask=key_mask[:, None] & kd_mask[None, :], other=0.0
            )
            scores = tl.sum(q[None, :] * k.to(tl.float32), axis=1)
            scores = tl.where(key_mask, scores, float("-inf"))
            new_max = tl.maximum(run_max, tl.max(scores, axis=0))
            rescale = tl.exp(run_max - new_max)
            probs = tl.exp(scores - new_max)
            run_sum = run_sum * rescale + tl.sum(probs, axis=0)
            v = tl.load(
                v_base + keys[:, None] * stride_vc + vd[None, :], mask=key_mask[:, None] & vd_mask[None, :], other=0.0
            )
            probs = probs.to(v.dtype).to(tl.float32)
            acc = acc * rescale + tl.sum(probs[:, None] * v.to(tl.float32), axis=0)
            run_max = new_max
        row = bh.to(tl.int64) * splits + split
        tl.store(part_ptr + row * dv + vd, acc, mask=vd_mask)
        tl.store(max_ptr + row, run_max, mask=pid_v == 0)
        tl.store(sum_ptr + row, run_sum, mask=pid_v == 0)


@triton.jit
def _decode_combine_kernel(
    part_ptr,  # [B * h, S, dv] float32
    max_ptr,  # [B * h, S] float32
    sum_ptr,  # [B * h, S] float32
    last_ptr,  # [1] int64
    o_ptr,  # [B, 1, h, dv] v's dtype
    heads,
    dv,
    splits,
    split_len,
    stride_ob,
    stride_oh,
    BLOCK_S: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Program (value slice, batch x head): the splits that hold valid slots, merged by their maxima."""
    pid_v = tl.program_id(0)
    bh = tl.program_id(1)
    active = (tl.load(last_ptr) + split_len) // split_len  # splits holding a valid slot
    s = tl.arange(0, BLOCK_S)
    s_mask = s < active
    rows = bh.to(tl.int64) * splits + s
    maxima = tl.load(max_ptr + rows, mask=s_mask, other=float("-inf"))
    weights = tl.where(s_mask, tl.exp(maxima - tl.max(maxima, axis=0)), 0.0)
    total = tl.sum(weights * tl.load(sum_ptr + rows, mask=s_mask, other=0.0), axis=0)
    vd = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    vd_mask = vd < dv
    parts = tl.load(part_ptr + rows[:, None] * dv + vd[None, :], mask=s_mask[:, None] & vd_mask[None, :], other=0.0)
    out = tl.sum(weights[:, None] * parts, axis=0) / total
    batch = bh // heads
    head = bh % heads
    tl.store(
        o_ptr + batch.to(tl.int64) * stride_ob + head * stride_oh + vd, out.to(o_ptr.dtype.element_ty), mask=vd_mask
    )


def _decode_blocks(dv: int, is_cuda: bool) -> dict[str, int]:
    if not is_cuda:  # the CPU interpreter: small tiles
        return {"block_n": 16, "block_dv": min(32, triton.next_power_of_2(dv)), "num_warps": 4, "programs": 8}
    # Measured on the H100 (benchmarks/KERNELS-NOTES.md): whole value rows per program (no recomputed scores)
    # and 16-key blocks beat slices of 512 by 1.9x at a full 7B chunk.
    return {"block_n": 16, "block_dv": min(2048, triton.next_power_of_2(dv)), "num_warps": 8, "programs": 512}


def _split_len(slots: int, programs_per_split: int, block_n: int, programs: int) -> int:
    """Keys per split: enough splits for about `programs` programs at a full chunk, in whole key blocks."""
    wanted = max(1, programs // programs_per_split)
    return triton.cdiv(triton.cdiv(slots, wanted), block_n) * block_n


def decode_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, last: torch.Tensor, **blocks: int
) -> torch.Tensor:
    """q [B, 1, h, dk] over the slots 0..last of k [B, h, C, dk], v [B, h, C, dv] -> [B, 1, h, dv] in v's dtype.

    `last` is a one-element int64 device tensor, read by the kernels: no host synchronisation, so a
    CUDA graph replays this as `last` moves. `blocks` overrides block_n, block_dv, num_warps and
    programs (the programs wanted at a full chunk, which sets the keys per split), or sets split_len."""
    batch, _, heads, dk = q.shape
    slots, dv = k.shape[2], v.shape[-1]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    config = _decode_blocks(dv, q.is_cuda) | blocks
    block_dv = config["block_dv"]
    dv_slices = triton.cdiv(dv, block_dv)
    split_len = config.get("split_len") or _split_len(
        slots, batch * heads * dv_slices, config["block_n"], config["programs"]
    )
    splits = triton.cdiv(slots, split_len)
    parts = torch.empty(batch * heads, splits, dv, dtype=torch.float32, device=q.device)
    maxima = torch.empty(batch * heads, splits, dtype=torch.float32, device=q.device)
    sums = torch.empty_like(maxima)
    _decode_attention_kernel[(dv_slices, splits, batch * heads)](
        q,
        k,
        v,
        last,
        parts,
        maxima,
        sums,
        heads,
        dk,
        dv,
        splits,
        split_len,
        q.stride(0),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        BLOCK_N=config["block_n"],
        BLOCK_DK=triton.next_power_of_2(dk),
        BLOCK_DV=block_dv,
        num_warps=config["num_warps"],
    )
    out = torch.empty(batch, 1, heads, dv, dtype=v.dtype, device=v.device)
    block_s = triton.next_power_of_2(splits)
    combine_dv = min(triton.next_power_of_2(dv), max(16, 4096 // block_s))
    _decode_combine_kernel[(triton.cdiv(dv, combine_dv), batch * heads)](
        parts,
        maxima,
        sums,
        last,
        out,
        heads,
        dv,
        splits,
        split_len,
        out.stride(0),
        out.stride(2),
        BLOCK_S=block_s,
        BLOCK_DV=combine_dv,
        num_warps=4,
    )
    return out


# -- the decoding step's q/k and cache write ---------------------------------------------------


@triton.jit
def _normalized_qk_kernel(
    z_ptr,  # [B * T * h, zh] contiguous
    shift_ptr,  # [2, h, zh] float32
    scale_ptr,  # [2, h, zh] float32
    rot_ptr,  # [T, zh / 2, 2] float32: cos, sin
    out_ptr,  # [2, B * T * h, zh] z's dtype
    rows,
    heads,
    length,
    zh,
    eps,
    BLOCK_HALF: tl.constexpr,
):
    """Program r: row r's RMS norm, then q's and k's affine and rotary of its (even, odd) pairs."""
    row = tl.program_id(0)
    head, token = row % heads, (row // heads) % length
    i = tl.arange(0, BLOCK_HALF)
    mask = i < zh // 2
    even = tl.load(z_ptr + row * zh + 2 * i, mask=mask, other=0.0).to(tl.float32)
    odd = tl.load(z_ptr + row * zh + 2 * i + 1, mask=mask, other=0.0).to(tl.float32)
    inv = tl.rsqrt((tl.sum(even * even, axis=0) + tl.sum(odd * odd, axis=0)) / zh + eps)
    even, odd = even * inv, odd * inv
    cos = tl.load(rot_ptr + token * zh + 2 * i, mask=mask, other=0.0)
    sin = tl.load(rot_ptr + token * zh + 2 * i + 1, mask=mask, other=0.0)
    for which in range(2):  # q, then k
        p = (which * heads + head) * zh + 2 * i
        a = even * tl.load(scale_ptr + p, mask=mask, other=0.0) + tl.load(shift_ptr + p, mask=mask, other=0.0)
        b = odd * tl.load(scale_ptr + p + 1, mask=mask, other=0.0) + tl.load(shift_ptr + p + 1, mask=mask, other=0.0)
        out = out_ptr + (which * rows + row) * zh + 2 * i
        tl.store(out, (a * cos - b * sin).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(out + 1, (a * sin + b * cos).to(out_ptr.dtype.element_ty), mask=mask)


def normalized_qk_triton(
    z: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, rotations: torch.Tensor, eps: float
) -> torch.Tensor:
    """`normalized_qk` (kernels/attention.py) in one kernel: z read once, q and k written once."""
    batch, length, heads, zh = z.shape
    z = z.contiguous()
    out = torch.empty(2, batch, length, heads, zh, dtype=z.dtype, device=z.device)
    rows = batch * length * heads
    _normalized_qk_kernel[(rows,)](
        z,
        shift.float().reshape(2, heads, zh).contiguous(),
        scale.float().reshape(2, heads, zh).contiguous(),
        torch.view_as_real(rotations.to(torch.complex64)).contiguous(),
        out,
        rows,
        heads,
        length,
        zh,
        eps,
        BLOCK_HALF=triton.next_power_of_2(zh // 2),
        num_warps=1,
    )
    return out


@triton.jit
def _write_slot_kernel(
    k_ptr,
    v_ptr,  # [B, 1, h, dk], [B, 1, h, dv]
    kbuf_ptr,
    vbuf_ptr,  # [B, h, C, dk], [B, h, C, dv]
    slot_ptr,  # [1] int64
    heads,
    dk,
    dv,
    stride_kb,
    stride_kh,
    stride_vb,
    stride_vh,
    stride_kbuf_b,
    stride_kbuf_h,
    stride_kbuf_c,
    stride_vbuf_b,
    stride_vbuf_h,
    stride_vbuf_c,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Program (batch x head): copy its key and value rows into the buffers' slot."""
    pid = tl.program_id(0)
    b, h = pid // heads, pid % heads
    slot = tl.load(slot_ptr)
    dks, dvs = tl.arange(0, BLOCK_DK), tl.arange(0, BLOCK_DV)
    key = tl.load(k_ptr + b * stride_kb + h * stride_kh + dks, mask=dks < dk)
    tl.store(kbuf_ptr + b * stride_kbuf_b + h * stride_kbuf_h + slot * stride_kbuf_c + dks, key, mask=dks < dk)
    value = tl.load(v_ptr + b * stride_vb + h * stride_vh + dvs, mask=dvs < dv)
    tl.store(vbuf_ptr + b * stride_vbuf_b + h * stride_vbuf_h + slot * stride_vbuf_c + dvs, value, mask=dvs < dv)


def write_slot_triton(
    k_buffer: torch.Tensor, v_buffer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor
) -> None:
    """`write_slot` (kernels/attention.py) in one launch for both buffers (the reference's two
    index_put_ take ~4.4 us each on the H100)."""
    batch, _, heads, dk = k.shape
    dv = v.shape[-1]
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    _write_slot_kernel[(batch * heads,)](
        k,
        v,
        k_buffer,
        v_buffer,
        slot,
        heads,
        dk,
        dv,
        k.stride(0),
        k.stride(2),
        v.stride(0),
        v.stride(2),
        k_buffer.stride(0),
        k_buffer.stride(1),
        k_buffer.stride(2),
        v_buffer.stride(0),
        v_buffer.stride(1),
        v_buffer.stride(2),
        BLOCK_DK=triton.next_power_of_2(dk),
        BLOCK_DV=triton.next_power_of_2(dv),
        num_warps=4,
    )
