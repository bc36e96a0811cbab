"""Sequence parallelism: one document read by several processes (GPUs), exactly.

Megalodon carries only two things across a chunk boundary, and both combine exactly:
- the timestep norm's running statistics, which merge as populations (count-weighted Welford);
- the CEMA's hidden state, which is linear in its input: a segment that starts from h ends in
  q^L h + (the end state it reaches from zero).
Attention never crosses a chunk. So each rank reads its own run of whole chunks layer by layer: per
layer it measures its segment's norm statistics and CEMA end state from zero, all-gathers them (a few
KB per layer), works out what flows into its segment from the ranks before it, and runs the layer
with that incoming state. The last rank's state is the state of the whole read, broadcast to all.

Models with the authors' norm refresh (`norm_refresh_after`, the reference checkpoints) replace the
statistics from a fresh pass every few chunks, which this scan does not model: they are refused.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megadoc.engine.model import Megalodon
from megadoc.engine.state import LayerState, State
from megadoc.kernels.attention import rotation
from megadoc.kernels.timestep_norm import NormStats


def chunk_split(chunks: int, world: int) -> list[int]:
    """Chunks per rank: as even as whole chunks allow, the first ranks taking the remainder."""
    return [chunks // world + (rank < chunks % world) for rank in range(world)]


def merge_stats(first: NormStats, second: NormStats) -> NormStats:
    """The statistics of `first`'s tokens followed by `second`'s (population mean and variance)."""
    n1, n2 = first.count.double()[:, None], second.count.double()[:, None]
    total = (n1 + n2).clamp(min=1)
    m1, m2 = first.mean.double(), second.mean.double()
    mean = (n1 * m1 + n2 * m2) / total
    var = (n1 * first.var.double() + n2 * second.var.double()) / total + n1 * n2 * (m1 - m2).square() / total**2
    both_empty = (n1 + n2) == 0
    mean = torch.where(both_empty, m1, mean)
    var = torch.where(both_empty, first.var.double(), var)
    return NormStats(first.count + second.count, mean.to(first.mean.dtype), var.to(first.var.dtype))


@torch.inference_mode()
def read_across_ranks(
    model: Megalodon,
    ids: torch.Tensor,
    state: State,
    *,
    chunks_per_rank: list[int] | None = None,
    group: dist.ProcessGroup | None = None,
    compute_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`model.read(ids, state)` shared out over the ranks of `group`: every rank passes the same
    `ids` [B, T] and `state` (at a chunk boundary) and ends with the same `state` as one process
    would. Returns (the tail, as `read` does; with `compute_logits`, this rank's logits [B, its
    tokens, V] of its segment, else None).

    `chunks_per_rank` (default `chunk_split`) says how many whole chunks each rank reads."""
    config = model.config
    if config.norm_refresh_after is not None:
        raise ValueError("sequence-parallel reading does not model the norm refresh (norm_refresh_after)")
    chunk = config.chunk_size
    if state.position % chunk:
        raise ValueError(f"the state must sit at a chunk boundary (position {state.position}, chunk {chunk})")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    chunks = ids.shape[1] // chunk
    split = chunk_split(chunks, world) if chunks_per_rank is None else chunks_per_rank
    if len(split) != world or sum(split) != chunks or min(split) < 1:
        raise ValueError(f"chunks_per_rank {split} must give each of {world} ranks at least one of {chunks} chunks")
    first = sum(split[:rank]) * chunk
    segment = ids[:, first : first + split[rank] * chunk].to(model.device)
    start = state.position + first
    positions = (start + torch.arange(segment.shape[1], device=model.device)) % chunk
    rotations = rotation(model.rope.freqs, positions)
    lengths = [n * chunk for n in split]

    x = model.embed_ids(segment)
    layers = []
    for layer, carried in zip(model.layers, state.layers, strict=True):
        mega = layer.mega
        stats = _incoming_stats(mega.timenorm, x, carried.norm, rank, group)
        t, _ = mega.timenorm(x, stats)
        cema_h = _incoming_cema(mega.cema, t, carried.cema_h, lengths, rank, group)
        empty = LayerState(norm=stats, cema_h=cema_h, k=carried.k[:, :0], v=carried.v[:, :0])
        y, layer_state = mega(x, empty, start, rotations)
        x = layer.nffn(y, residual=x)
        layers.append(layer_state)
    final_in = _incoming_stats(model.output.final_norm, x, state.final_norm, rank, group)
    y, final_norm = model.output.final_norm(x, final_in)
    logits = model.output.logits(y) if compute_logits else None

    mine = State(layers=layers, final_norm=final_norm, position=state.position + first + segment.shape[1])
    _broadcast_state_from_last(mine, state, world, group)
    return ids[:, chunks * chunk :], logits


def _incoming_stats(norm, x: torch.Tensor, carried: NormStats, rank: int, group) -> NormStats:
    """The norm statistics of everything before this rank's segment: `carried`, then each earlier
    rank's segment (its statistics measured from empty)."""
    empty = NormStats(torch.zeros_like(carried.count), torch.zeros_like(carried.mean), torch.ones_like(carried.var))
    _, local = norm(x, empty)
    gathered = [_all_gather(t, group) for t in (local.count, local.mean, local.var)]
    incoming = carried
    for earlier in range(rank):
        incoming = merge_stats(incoming, NormStats(*(g[earlier] for g in gathered)))
    return incoming


def _incoming_cema(cema, t: torch.Tensor, carried: torch.Tensor, lengths: list[int], rank: int, group) -> torch.Tensor:
    """The CEMA hidden state entering this rank's segment: h' = q^L h + (the segment's end state from zero)."""
    _, local = cema(t, torch.zeros_like(carried))
    ends = _all_gather(local, group)
    log_q = cema.coefficients().log_q
    incoming = carried
    for earlier in range(rank):
        incoming = torch.exp(log_q * lengths[earlier]) * incoming + ends[earlier]
    return incoming


def _all_gather(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    """Every rank's `tensor` (complex ones travel as their real pairs: gloo has no complex type)."""
    send = torch.view_as_real(tensor) if tensor.is_complex() else tensor
    send = send.contiguous()
    out = [torch.empty_like(send) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, send, group=group)
    return [torch.view_as_complex(o) if tensor.is_complex() else o for o in out]


def _broadcast_state_from_last(mine: State, state: State, world: int, group) -> None:
    """Copy the last rank's end state into `state` on every rank."""
    last = dist.get_global_rank(group, world - 1) if group is not None else world - 1
    for layer, source in zip(state.layers, mine.layers, strict=True):
        for name in ("count", "mean", "var"):
            setattr(layer.norm, name, _broadcast(getattr(source.norm, name), last, group))
        layer.cema_h = _broadcast(source.cema_h, last, group)
        layer.k, layer.v = source.k, source.v  # a segment ends at a chunk boundary: both are empty
    for name in ("count", "mean", "var"):
        setattr(state.final_norm, name, _broadcast(getattr(mine.final_norm, name), last, group))
    position = torch.tensor(mine.position, device=state.final_norm.count.device)
    state.position = int(_broadcast(position, last, group))


def _broadcast(tensor: torch.Tensor, source: int, group) -> torch.Tensor:
    send = (torch.view_as_real(tensor) if tensor.is_complex() else tensor).contiguous().clone()
    dist.broadcast(send, src=source, group=group)
    return torch.view_as_complex(send) if tensor.is_complex() else send
