"""Chunk-local causal attention's entry points (the function is defined in attention/reference.py).

On CUDA tensors `normalized_qk`, `write_slot`, `chunk_attention` and `decode_attention` run the
Triton kernels of attention/triton.py unless the "reference" backend is chosen (kernels/backend.py);
while a gradient is recorded (training), `chunk_attention` runs there as an autograd.Function whose
backward is Triton kernels too, and the others run their references.
"""

from __future__ import annotations

import torch

from megadoc.kernels.attention import reference
from megadoc.kernels.attention.reference import rotary, rotation
from megadoc.kernels.backend import current_backend, records_grad, use_triton, use_triton_autograd

__all__ = ["chunk_attention", "decode_attention", "normalized_qk", "rotary", "rotation", "write_slot"]


def normalized_qk(
    z: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, rotations: torch.Tensor, eps: float
) -> torch.Tensor:
    """q and k from the shared projection z [B, T, h, zh]: each head's RMS norm in float32, q's and
    k's own affine (scale, shift [2, 1, 1, h, zh]), and the rotary of `rotations` [T, zh/2]; returned
    stacked [2, B, T, h, zh] in z's dtype. On CUDA one Triton kernel does it."""
    if use_triton(z):
        from megadoc.kernels.attention.triton import normalized_qk_triton

        return normalized_qk_triton(z, shift, scale, rotations, eps)
    return reference.normalized_qk(z, shift, scale, rotations, eps)


def write_slot(
    k_buffer: torch.Tensor, v_buffer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor
) -> None:
    """Write one token's k [B, 1, h, dk] and v [B, 1, h, dv] into the decoding buffers
    [B, h, C, d] at `slot`, a one-element int64 device tensor (a CUDA graph replays it as it moves)."""
    if use_triton(k):
        from megadoc.kernels.attention.triton import write_slot_triton

        write_slot_triton(k_buffer, v_buffer, k, v, slot)
        return
    return reference.write_slot(k_buffer, v_buffer, k, v, slot)


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, Tq, h, dk], k [B, Tk, h, dk], v [B, Tk, h, dv] with Tq <= Tk -> [B, Tq, h, dv].

    On CUDA (unless the "reference" backend is chosen): while a gradient is recorded for any of them,
    the Triton kernels with their Triton backward, on inputs cast to the autocast dtype when autocast
    is on (as the reference's einsums would be); with grad mode off, the Triton forward kernel (SDPA
    under the "sdpa" backend). Otherwise the reference."""
    if use_triton_autograd(q) and records_grad(q, k, v):
        from megadoc.kernels.attention.triton import chunk_attention_autograd

        if torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        return chunk_attention_autograd(q, k, v)
    if use_triton(q):
        from megadoc.kernels.attention.triton import chunk_attention_sdpa, chunk_attention_triton

        return (chunk_attention_sdpa if current_backend() == "sdpa" else chunk_attention_triton)(q, k, v)
    return reference.chunk_attention(q, k, v)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """q [B, 1, h, dk] over the slots 0..last of k [B, h, C, dk], v [B, h, C, dv] -> [B, 1, h, dv].

    `last` is a one-element int64 device tensor (0 <= last < C). The numerics of `chunk_attention`;
    the slots after `last` get probability 0 (their values must be finite)."""
    if use_triton(q):
        from megadoc.kernels.attention.triton import decode_attention_triton

        return decode_attention_triton(q, k, v, last)
    return reference.decode_attention(q, k, v, last)
