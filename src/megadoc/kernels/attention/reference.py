"""Chunk-local causal attention with rotary embedding.

Megalodon attends only inside fixed chunks, so one call here covers queries that all sit in one
chunk (or a batch of whole chunks folded into the batch dimension). Keys may start earlier in the
same chunk than the queries (the decoding cache): the queries are the LAST Tq of the Tk keys'
positions. Scores use scale 1 (the 1/sqrt(d) is folded into q upstream); q k^T in the inputs'
dtype, softmax in float32, probabilities cast back to v's dtype, as the authors' bf16 runs do.
`decode_attention` is the decoding step's form: one query per row over a chunk's fixed-size key and
value buffers, of which only the slots up to a device-side index are valid (a CUDA graph can replay
it as that index moves). On CUDA tensors `chunk_attention` and `decode_attention` run
kernels/attention_triton.py unless MEGADOC_KERNELS=reference (see kernels/dispatch.py); while a
gradient is recorded (training), `chunk_attention` runs there as an autograd.Function whose backward
is Triton kernels too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megadoc.kernels.dispatch import records_grad, use_triton, use_triton_autograd


def rotation(inv_freq: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The rotary factors e^(i positions x inv_freq): [T, d/2] complex64 for positions [T], inv_freq [d/2].
    They depend on the positions only: computed once per call and shared by every layer."""
    angles = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    return torch.polar(torch.ones_like(angles), angles)


def rotary(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of x [..., T, h, d] by `rotations` [T, d/2] (from `rotation`), in float32.
    One complex product: a single kernel (as real multiply-adds of the pairs it would take several)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rotations[:, None, :]).flatten(-2)


def normalized_qk(
    z: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, rotations: torch.Tensor, eps: float
) -> torch.Tensor:
    """q and k from the shared projection z [B, T, h, zh]: each head's RMS norm in float32, q's and
    k's own affine (scale, shift [2, 1, 1, h, zh]), and the rotary of `rotations` [T, zh/2]; returned
    stacked [2, B, T, h, zh] in z's dtype. On CUDA kernels/attention_triton.py does it in one kernel."""
    if use_triton(z):
        from megadoc.kernels.attention_triton import normalized_qk_triton

        return normalized_qk_triton(z, shift, scale, rotations, eps)
    normed = F.rms_norm(z.float(), z.shape[-1:], eps=eps)
    return rotary(torch.addcmul(shift, normed, scale), rotations).to(z.dtype)


def write_slot(
    k_buffer: torch.Tensor, v_buffer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor
) -> None:
    """Write one token's k [B, 1, h, dk] and v [B, 1, h, dv] into the decoding buffers
    [B, h, C, d] at `slot`, a one-element int64 device tensor (a CUDA graph replays it as it moves)."""
    if use_triton(k):
        from megadoc.kernels.attention_triton import write_slot_triton

        write_slot_triton(k_buffer, v_buffer, k, v, slot)
        return
    k_buffer[:, :, slot] = k.transpose(1, 2)
    v_buffer[:, :, slot] = v.transpose(1, 2)


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, Tq, h, dk], k [B, Tk, h, dk], v [B, Tk, h, dv] with Tq <= Tk -> [B, Tq, h, dv].

    On CUDA (unless MEGADOC_KERNELS=reference): while a gradient is recorded for any of them, the
    Triton kernels with their Triton backward, on inputs cast to the autocast dtype when autocast is
    on (as the einsums below would be); with grad mode off, `chunk_attention_gpu` (MEGADOC_ATTENTION=sdpa
    selects SDPA there). Otherwise this reference."""
    if use_triton_autograd(q) and records_grad(q, k, v):
        from megadoc.kernels.attention_triton import chunk_attention_autograd

        if torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        return chunk_attention_autograd(q, k, v)
    if use_triton(q):
        from megadoc.kernels.attention_triton import chunk_attention_gpu

        return chunk_attention_gpu(q, k, v)
    tq, tk = q.shape[1], k.shape[1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k).float()
    query_pos = torch.arange(tk - tq, tk, device=q.device)[:, None]
    key_pos = torch.arange(tk, device=q.device)[None, :]
    scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """q [B, 1, h, dk] over the slots 0..last of k [B, h, C, dk], v [B, h, C, dv] -> [B, 1, h, dv].

    `last` is a one-element int64 device tensor (0 <= last < C). The numerics of `chunk_attention`;
    the slots after `last` get probability 0 (their values must be finite)."""
    if use_triton(q):
        from megadoc.kernels.attention_triton import decode_attention_triton

        return decode_attention_triton(q, k, v, last)
    valid = torch.arange(k.shape[2], device=k.device) <= last
    scores = (q.transpose(1, 2) @ k.transpose(-1, -2)).float()  # [B, h, 1, C]
    scores = scores.masked_fill(~valid, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return (probs @ v).transpose(1, 2)
