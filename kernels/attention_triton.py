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
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kc,
    stride_vb, stride_vh, stride_vc,
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
            k = tl.load(k_base + keys[:, None] * stride_kc + kd[None, :], mask=key_mask[:, None] & kd_mask[None, :],
                        other=0.0)
            scores = tl.sum(q[None, :] * k.to(tl.float32), axis=1)
            scores = tl.where(key_mask, scores, float("-inf"))
            new_max = tl.maximum(run_max, tl.max(scores, axis=0))
            rescale = tl.exp(run_max - new_max)
            probs = tl.exp(scores - new_max)
            run_sum = run_sum * rescale + tl.sum(probs, axis=0)
            v = tl.load(v_base + keys[:, None] * stride_vc + vd[None, :], mask=key_mask[:, None] & vd_mask[None, :],
                        other=0.0)
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
    stride_ob, stride_oh,
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
    tl.store(o_ptr + batch.to(tl.int64) * stride_ob + head * stride_oh + vd, out.to(o_ptr.dtype.element_ty),
             mask=vd_mask)


def _decode_blocks(dv: int, is_cuda: bool) -> dict[str, int]:
    if not is_cuda:  # the CPU interpreter: small tiles
        return {"block_n": 16, "block_dv": min(32, triton.next_power_of_2(dv)), "num_warps": 4, "programs": 8}
    # Measured on the H100 (evals/KERNELS-NOTES.md): whole value rows per program (no recomputed scores)
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
        slots, batch * heads * dv_slices, config["block_n"], config["programs"])
    splits = triton.cdiv(slots, split_len)
    parts = torch.empty(batch * heads, splits, dv, dtype=torch.float32, device=q.device)
    maxima = torch.empty(batch * heads, splits, dtype=torch.float32, device=q.device)
    sums = torch.empty_like(maxima)
    _decode_attention_kernel[(dv_slices, splits, batch * heads)](
        q, k, v, last, parts, maxima, sums, heads, dk, dv, splits, split_len,
        q.stride(0), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        BLOCK_N=config["block_n"], BLOCK_DK=triton.next_power_of_2(dk), BLOCK_DV=block_dv,
        num_warps=config["num_warps"],
    )
    out = torch.empty(batch, 1, heads, dv, dtype=v.dtype, device=v.device)
    block_s = triton.next_power_of_2(splits)
    combine_dv = min(triton.next_power_of_2(dv), max(16, 4096 // block_s))
    _decode_combine_kernel[(triton.cdiv(dv, combine_dv), batch * heads)](
        parts, maxima, sums, last, out, heads, dv, splits, split_len, out.stride(0), out.stride(2),
        BLOCK_S=block_s, BLOCK_DV=combine_dv, num_warps=4,
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
        z, shift.float().reshape(2, heads, zh).contiguous(), scale.float().reshape(2, heads, zh).contiguous(),
        torch.view_as_real(rotations.to(torch.complex64)).contiguous(), out, rows, heads, length, zh, eps,
        BLOCK_HALF=triton.next_power_of_2(zh // 2), num_warps=1,
    )
    return out


@triton.jit
def _write_slot_kernel(
    k_ptr, v_ptr,  # [B, 1, h, dk], [B, 1, h, dv]
    kbuf_ptr, vbuf_ptr,  # [B, h, C, dk], [B, h, C, dv]
    slot_ptr,  # [1] int64
    heads, dk, dv,
    stride_kb, stride_kh, stride_vb, stride_vh,
    stride_kbuf_b, stride_kbuf_h, stride_kbuf_c, stride_vbuf_b, stride_vbuf_h, stride_vbuf_c,
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


def write_slot_triton(k_buffer: torch.Tensor, v_buffer: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      slot: torch.Tensor) -> None:
    """`write_slot` (kernels/attention.py) in one launch for both buffers (the reference's two
    index_put_ take ~4.4 us each on the H100)."""
    batch, _, heads, dk = k.shape
    dv = v.shape[-1]
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    _write_slot_kernel[(batch * heads,)](
        k, v, k_buffer, v_buffer, slot, heads, dk, dv,
        k.stride(0), k.stride(2), v.stride(0), v.stride(2),
        k_buffer.stride(0), k_buffer.stride(1), k_buffer.stride(2),
        v_buffer.stride(0), v_buffer.stride(1), v_buffer.stride(2),
        BLOCK_DK=triton.next_power_of_2(dk), BLOCK_DV=triton.next_power_of_2(dv), num_warps=4,
    )
