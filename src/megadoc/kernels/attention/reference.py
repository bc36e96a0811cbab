"""Chunk-local causal attention with rotary embedding.

Megalodon attends only inside fixed chunks, so one call here covers queries that all sit in one
chunk (or a batch of whole chunks folded into the batch dimension). Keys may start earlier in the
same chunk than the queries (the decoding cache): the queries are the LAST Tq of the Tk keys'
positions. Scores use scale 1 (the 1/sqrt(d) is folded into q upstream); q k^T in the inputs'
dtype, softmax in float32, probabilities cast back to v's dtype, as the authors' bf16 runs do.
`decode_attention` is the decoding step's form: one query per row over a chunk's fixed-size key and
value buffers, of which only the slots up to a device-side index are valid (a CUDA graph can replay
it as that index moves).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    stacked [2, B, T, h, zh] in z's dtype."""
    normed = F.rms_norm(z.float(), z.shape[-1:], eps=eps)
    return rotary(torch.addcmul(shift, normed, scale), rotations).to(z.dtype)


def write_slot(
    k_buffer: torch.Tensor, v_buffer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot: torch.Tensor
) -> None:
    """Write one token's k [B, 1, h, dk] and v [B, 1, h, dv] into the decoding buffers
    [B, h, C, d] at `slot`, a one-element int64 device tensor (a CUDA graph replays it as it moves)."""
    k_buffer[:, :, slot] = k.transpose(1, 2)
    v_buffer[:, :, slot] = v.transpose(1, 2)


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, Tq, h, dk], k [B, Tk, h, dk], v [B, Tk, h, dv] with Tq <= Tk -> [B, Tq, h, dv]."""
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
    valid = torch.arange(k.shape[2], device=k.device) <= last
    scores = (q.transpose(1, 2) @ k.transpose(-1, -2)).float()  # [B, h, 1, C]
    scores = scores.masked_fill(~valid, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return (probs @ v).transpose(1, 2)
