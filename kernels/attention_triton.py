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
"""

from __future__ import annotations

import os

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
    tq,
    tk,
    heads,
    dk,
    dv,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
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

    out = acc / row_sum[:, None]
    o_base = o_ptr + batch.to(tl.int64) * stride_ob + head * stride_oh
    tl.store(o_base + rows[:, None] * stride_ot + vd[None, :], out.to(o_ptr.dtype.element_ty),
             mask=row_mask[:, None] & vd_mask[None, :])


def _default_blocks(tq: int, dv: int, is_cuda: bool) -> dict[str, int]:
    if not is_cuda:  # the CPU interpreter: small tiles
        return {"block_m": 16, "block_n": 16, "block_dv": min(32, triton.next_power_of_2(dv)), "num_warps": 4,
                "num_stages": 1}
    if tq <= 16:  # decoding: a query or a few, long key range
        return {"block_m": 16, "block_n": 64, "block_dv": min(256, triton.next_power_of_2(dv)), "num_warps": 4,
                "num_stages": 2}
    # Measured on the H100 at the 7B's shapes (evals/KERNELS-NOTES.md): value slices of 256 halve the
    # recomputed q k^T of slices of 128 and still fit 8 warps' registers.
    return {"block_m": 128, "block_n": 64, "block_dv": min(256, triton.next_power_of_2(dv)), "num_warps": 8,
            "num_stages": 2}


def chunk_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **blocks: int
) -> torch.Tensor:
    """q [B, Tq, h, dk], k [B, Tk, h, dk], v [B, Tk, h, dv] with Tq <= Tk -> [B, Tq, h, dv] in v's dtype.

    `blocks` overrides the tile sizes (block_m, block_n, block_dv, num_warps, num_stages)."""
    batch, tq, heads, dk = q.shape
    tk, dv = k.shape[1], v.shape[-1]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty(batch, tq, heads, dv, dtype=v.dtype, device=v.device)
    if tq == 0:
        return out
    config = _default_blocks(tq, dv, q.is_cuda) | blocks
    grid = (triton.cdiv(dv, config["block_dv"]), triton.cdiv(tq, config["block_m"]), batch * heads)
    _chunk_attention_kernel[grid](
        q, k, v, out, tq, tk, heads, dk, dv,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=config["block_m"], BLOCK_N=config["block_n"], BLOCK_DK=max(16, triton.next_power_of_2(dk)),
        BLOCK_DV=config["block_dv"], PRECISION="ieee" if q.dtype == torch.float32 or not q.is_cuda else "tf32",
        UPCAST_DOT=not q.is_cuda,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out


def chunk_attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same through torch's scaled_dot_product_attention (whichever backend accepts the shapes)."""
    tq, tk = q.shape[1], k.shape[1]
    mask = None if tq == tk else causal_lower_right(tq, tk)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=tq == tk, scale=1.0
    )
    return out.transpose(1, 2)


def chunk_attention_gpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """What `chunk_attention` runs on CUDA: the Triton kernel, or SDPA with MEGADOC_ATTENTION=sdpa."""
    if os.environ.get("MEGADOC_ATTENTION", "triton") == "sdpa":
        return chunk_attention_sdpa(q, k, v)
    return chunk_attention_triton(q, k, v)
