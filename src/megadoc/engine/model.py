"""Megalodon in plain PyTorch: modules named as in the authors' release, streaming through `State`.

Runs in float32 on CPU and bf16 on CUDA; the complex EMA, the norm statistics and the softmax are
always float32. Every forward continues from a `State` and updates it, so a document can be fed in
any pieces: one pass, chunk by chunk or token by token give the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from megadoc.engine.config import MegalodonConfig
from megadoc.engine.state import LayerState, State
from megadoc.kernels.attention import chunk_attention, normalized_qk, rotation
from megadoc.kernels.cema import CemaCoefficients, cema, cema_coefficients, cema_step
from megadoc.kernels.linear import LinearGroup, fused_linear, fused_linear_grouped
from megadoc.kernels.norm import layer_norm, rms_norm
from megadoc.kernels.timestep_norm import NormStats, timestep_norm, timestep_norm_step

if TYPE_CHECKING:
    from megadoc.engine.generation import GenerationConfig


def _linear_init(layer: nn.Linear) -> None:
    """The release's kaiming_normal(a=sqrt(5)): std 1/sqrt(3 fan_in); zero bias."""
    nn.init.normal_(layer.weight, std=1.0 / math.sqrt(3 * layer.weight.shape[1]))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _weight_scale(linear: nn.Linear | None) -> torch.Tensor | None:
    """The per-row scale of an int8 weight (engine/quantize.py); None for a float one."""
    return getattr(linear, "weight_scale", None)


def _offset_scale(weight: torch.Tensor | None) -> torch.Tensor | None:
    """A norm's float32 scale: its weight is stored as an offset from 1."""
    return None if weight is None else weight.float() + 1


class TimestepNorm(nn.Module):
    def __init__(self, dim: int, groups: int, eps: float) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("prior_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("prior_mean", torch.zeros(groups))
        self.register_buffer("prior_logv", torch.zeros(groups))

    def initial_stats(self, batch: int) -> NormStats:
        return NormStats(
            count=self.prior_count.expand(batch).clone(),
            mean=self.prior_mean.float().expand(batch, -1).clone(),
            var=self.prior_logv.float().exp().expand(batch, -1).clone(),
        )

    @torch.autocast("cuda", enabled=False)
    def forward(self, x: torch.Tensor, stats: NormStats) -> tuple[torch.Tensor, NormStats]:
        if x.shape[1] == 1:
            y, stats = timestep_norm_step(x[:, 0], stats, self.weight, self.bias, self.eps)
            return y[:, None], stats
        return timestep_norm(x, stats, self.weight, self.bias, self.eps)


class ComplexEMA(nn.Module):
    def __init__(self, dim: int, ndim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(dim, ndim, 1))
        self.delta = nn.Parameter(torch.empty(dim, ndim, 1))
        self.theta = nn.Parameter(torch.empty(dim, 1, 1))
        self.gamma = nn.Parameter(torch.empty(dim, ndim, 2))
        self.omega = nn.Parameter(torch.empty(dim, 1))

    def reset_parameters(self) -> None:
        dim = self.theta.shape[0]
        nn.init.normal_(self.alpha, std=0.2)
        nn.init.normal_(self.delta, std=0.2)
        frequencies = torch.exp(-torch.arange(1, dim + 1) * math.log(dim) / dim)[torch.randperm(dim)]
        self.theta.data.copy_(torch.logit(frequencies).reshape(dim, 1, 1))
        nn.init.normal_(self.gamma)
        self.gamma.data[..., 1] = 0
        nn.init.trunc_normal_(self.omega, std=0.25, a=-1.0, b=1.0)

    def coefficients(self) -> CemaCoefficients:
        """The recurrence's coefficients; a decoder computes them once rather than every token."""
        return cema_coefficients(self.alpha, self.delta, self.theta, self.gamma, self.omega)

    @torch.autocast("cuda", enabled=False)
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coeffs = self.coefficients()
        if x.shape[1] == 1:
            y, h = cema_step(x[:, 0], coeffs, h)
            return y[:, None], h
        return cema(x, coeffs, h)


@dataclass
class ProjectionParams:
    """`MovingAverageGatedAttention.project`'s float32 tensors derived from parameters: computed per
    call on the sequence path, once per decoder on the decoding step (engine/decode.py)."""

    norm_scale: torch.Tensor | None  # [D]: the RMSNorm's weight + 1
    qk_scale: torch.Tensor  # [2, 1, 1, h, zh]: (gamma + 1) / sqrt(zh), for q then k
    qk_shift: torch.Tensor  # [2, 1, 1, h, zh]: beta
    m_group: LinearGroup | None = None  # wz, wr, wh1 concatenated (`m_group`): a decoder's one read of m


@dataclass
class FeedForwardParams:
    """`NormalizedFeedForward`'s LayerNorm affine in float32 (None without `norm_affine`)."""

    norm_weight: torch.Tensor | None  # [D]: weight + 1
    norm_bias: torch.Tensor | None  # [D]


class MovingAverageGatedAttention(nn.Module):
    """The `mega` half of a layer: timestep norm, CEMA, normalized chunk-local attention, gating."""

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.config = config
        d, z, v = config.model_dim, config.z_dim, config.value_dim
        self.timenorm = TimestepNorm(d, config.norm_num_groups, config.norm_eps)
        self.cema = ComplexEMA(d, config.cema_ndim)
        self.rmsnorm = nn.Module()
        self.rmsnorm.weight = nn.Parameter(torch.zeros(d)) if config.norm_affine else None
        self.wz = nn.Linear(d, z)
        self.wv = nn.Linear(d, v)
        self.wr = nn.Linear(d, v)
        self.wh1 = nn.Linear(d, d)
        self.wh2 = nn.Linear(v, d, bias=False)
        self.gamma = nn.Parameter(torch.zeros(2, z))
        self.beta = nn.Parameter(torch.zeros(2, z))

    def reset_parameters(self) -> None:
        self.cema.reset_parameters()
        for layer in (self.wz, self.wv, self.wr, self.wh1, self.wh2):
            _linear_init(layer)

    def forward(
        self, x: torch.Tensor, state: LayerState, position: int, rotations: torch.Tensor
    ) -> tuple[torch.Tensor, LayerState]:
        """`rotations` [T, zh/2]: the rotary factors of the tokens' in-chunk positions (`rotation`)."""
        t, norm_stats = self.timenorm(x, state.norm)
        c, cema_h = self.cema(t, state.cema_h)
        m, q, k, v, r, h = self.project(x, t, c, rotations)
        attn, cache_k, cache_v = _chunked_attention(q, k, v, state.k, state.v, position, self.config.chunk_size)
        return self.gate(x, m, attn, r, h), LayerState(norm=norm_stats, cema_h=cema_h, k=cache_k, v=cache_v)

    def projection_params(self) -> ProjectionParams:
        cfg = self.config
        shape = (2, 1, 1, cfg.num_heads, cfg.head_z_dim)
        return ProjectionParams(
            norm_scale=_offset_scale(self.rmsnorm.weight),
            qk_scale=((self.gamma.float() + 1) / math.sqrt(cfg.head_z_dim)).view(shape),
            qk_shift=self.beta.float().view(shape),
        )

    def m_group(self, out: LinearGroup | None = None) -> LinearGroup:
        """wz, wr and wh1, the three reads of m, as one LinearGroup (copies of their weights, biases
        and int8 scales): `project` with it in `params.m_group` reads m once for the three. `out`, an
        earlier group of this module, is refilled in place instead (a captured graph reads it)."""
        linears = (self.wz, self.wr, self.wh1)
        weights = [linear.weight for linear in linears]
        biases = [linear.bias for linear in linears]
        scales = [_weight_scale(linear) for linear in linears]
        if out is not None:
            return out.load_(weights, biases, scales)
        return LinearGroup.of(weights, biases, silu=(False, True, False), weight_scales=scales)

    def project(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        c: torch.Tensor,
        rotations: torch.Tensor,
        params: ProjectionParams | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """(m, q, k, v, r, h) from the layer's input x, the norm's output t and the CEMA's output c
        [B, T, D]; q and k are rotated by `rotations` [T, zh/2] (from a device tensor of positions, so
        a captured decoding step can move them). `params` defaults to `projection_params()`: a
        decoder passes its own. With its `m_group`, wh1 reads m in the same launch as wz and wr, and
        h = m @ wh1.T + bias + x (`gate`'s residual path) comes back; otherwise h is None and `gate`
        computes it. Shared by `forward` and the static decoder (engine/decode.py)."""
        cfg = self.config
        params = self.projection_params() if params is None else params
        m = rms_norm(c, params.norm_scale, cfg.norm_eps)
        if _drops(self):
            m = F.dropout(m, cfg.hidden_dropout)
        if params.m_group is None or _drops(self):
            z = fused_linear(m, self.wz.weight, self.wz.bias, weight_scale=_weight_scale(self.wz))
            r = fused_linear(m, self.wr.weight, self.wr.bias, silu=True, weight_scale=_weight_scale(self.wr))
            h = None
        else:
            z, r, h = fused_linear_grouped(m, params.m_group, (None, None, x))
        z = z.unflatten(-1, (cfg.num_heads, cfg.head_z_dim))
        q, k = normalized_qk(z, params.qk_shift, params.qk_scale, rotations, cfg.norm_eps).to(t.dtype)
        v = fused_linear(t, self.wv.weight, self.wv.bias, silu=True, weight_scale=_weight_scale(self.wv))
        v = v.unflatten(-1, (cfg.num_heads, cfg.head_value_dim))
        return m, q, k, v, r, h

    def gate(
        self, x: torch.Tensor, m: torch.Tensor, attn: torch.Tensor, r: torch.Tensor, h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The gated output projection of the attention [B, T, h, dv], plus the residual path: h =
        m @ wh1.T + bias + x, computed here unless `project` passes it. Training with dropouts:
        hidden dropout on the gated attention, dropout on the output before the residual (so the
        fused residual adds are split)."""
        if _drops(self):
            gated = F.dropout(attn.flatten(-2) * r, self.config.hidden_dropout)
            h = fused_linear(m, self.wh1.weight, self.wh1.bias, weight_scale=_weight_scale(self.wh1))
            h = h + fused_linear(gated, self.wh2.weight, weight_scale=_weight_scale(self.wh2))
            return x + F.dropout(h, self.config.dropout)
        if h is None:
            h = fused_linear(m, self.wh1.weight, self.wh1.bias, residual=x, weight_scale=_weight_scale(self.wh1))
        return fused_linear(
            attn.flatten(-2), self.wh2.weight, scale=r, residual=h, weight_scale=_weight_scale(self.wh2)
        )


def _drops(module: nn.Module) -> bool:
    """Whether `module` is training with a dropout on (otherwise the fused, drop-free paths run)."""
    return module.training and (module.config.dropout > 0 or module.config.hidden_dropout > 0)


def _chunked_attention(q, k, v, cache_k, cache_v, position: int, chunk: int):
    """Attention of a call's queries inside their chunks, continuing the current chunk's cache.

    Returns (output [B, T, h, dv], the keys and values of the chunk the call ends in)."""
    batch, length = q.shape[:2]
    offset = position % chunk
    head = min(length, chunk - offset) if offset else 0
    pieces = []
    if head:
        keys, values = torch.cat([cache_k, k[:, :head]], 1), torch.cat([cache_v, v[:, :head]], 1)
        pieces.append(chunk_attention(q[:, :head], keys, values))
    full = (length - head) // chunk
    if full:
        span = slice(head, head + full * chunk)

        def fold(t: torch.Tensor) -> torch.Tensor:
            return t[:, span].reshape(batch * full, chunk, *t.shape[2:])

        out = chunk_attention(fold(q), fold(k), fold(v))
        pieces.append(out.reshape(batch, full * chunk, *out.shape[2:]))
    start = head + full * chunk
    if start < length:
        pieces.append(chunk_attention(q[:, start:], k[:, start:], v[:, start:]))
    output = torch.cat(pieces, 1)

    in_chunk = (position + length) % chunk
    if in_chunk == 0:
        return output, k[:, :0], v[:, :0]
    if head == length:  # the call stayed inside the chunk the cache belongs to
        return output, torch.cat([cache_k, k], 1), torch.cat([cache_v, v], 1)
    return output, k[:, length - in_chunk :], v[:, length - in_chunk :]


class NormalizedFeedForward(nn.Module):
    """The `nffn` half: LayerNorm, SwiGLU (or SiLU) MLP, optional rescale; the residual is the
    layer's input (the two-hop residual)."""

    def __init__(self, config: MegalodonConfig, layer_index: int) -> None:
        super().__init__()
        self.config, self.layer_index = config, layer_index
        d, f = config.model_dim, config.ffn_hidden_dim
        self.norm = nn.LayerNorm(d, elementwise_affine=config.norm_affine, eps=config.norm_eps)
        if config.norm_affine:
            nn.init.zeros_(self.norm.weight)
        self.fc1 = nn.Linear(d, f, bias=False)
        self.fc2 = nn.Linear(f, d, bias=False)
        self.fc3 = nn.Linear(d, f, bias=False) if config.swiglu else None
        self.alpha = nn.Parameter(torch.full((d,), 0.1 * 0.5**layer_index)) if config.rescale_nffn else None

    def reset_parameters(self) -> None:
        for layer in (self.fc1, self.fc2, self.fc3):
            if layer is not None:
                _linear_init(layer)
        if self.alpha is not None:
            self.alpha.data.fill_(0.1 * 0.5**self.layer_index)

    def norm_params(self) -> FeedForwardParams:
        bias = None if self.norm.bias is None else self.norm.bias.float()
        return FeedForwardParams(norm_weight=_offset_scale(self.norm.weight), norm_bias=bias)

    def forward(self, y: torch.Tensor, residual: torch.Tensor, params: FeedForwardParams | None = None) -> torch.Tensor:
        """`params` defaults to `self.norm_params()`: a decoder passes its own."""
        params = self.norm_params() if params is None else params
        u = layer_norm(y, params.norm_weight, params.norm_bias, self.config.norm_eps)
        hidden = fused_linear(
            u,
            self.fc1.weight,
            silu=True,
            up=None if self.fc3 is None else self.fc3.weight,
            weight_scale=_weight_scale(self.fc1),
            up_scale=_weight_scale(self.fc3),
        )
        fc2_scale = _weight_scale(self.fc2)
        if _drops(self):
            hidden = F.dropout(hidden, self.config.hidden_dropout)
            out = F.dropout(fused_linear(hidden, self.fc2.weight, weight_scale=fc2_scale), self.config.dropout)
            return residual + out if self.alpha is None else torch.addcmul(residual, out, self.alpha)
        if self.alpha is None:
            return fused_linear(hidden, self.fc2.weight, residual=residual, weight_scale=fc2_scale)
        return torch.addcmul(residual, fused_linear(hidden, self.fc2.weight, weight_scale=fc2_scale), self.alpha)


class MegalodonLayer(nn.Module):
    def __init__(self, config: MegalodonConfig, layer_index: int) -> None:
        super().__init__()
        self.mega = MovingAverageGatedAttention(config)
        self.nffn = NormalizedFeedForward(config, layer_index)

    def forward(self, x, state: LayerState, position: int, rotations) -> tuple[torch.Tensor, LayerState]:
        y, state = self.mega(x, state, position, rotations)
        return self.nffn(y, residual=x), state


class RotaryFrequencies(nn.Module):
    """Holds `rope.freqs`: a checkpoint's stored (possibly bf16-rounded) values are used as they are."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        # Computed on the CPU, then moved to the default device: on the meta device (a checkpoint being built)
        # this arithmetic would import dynamo, ~1 s of every start of the app.
        exponents = torch.arange(0, head_dim, 2, device="cpu").float() / head_dim
        self.register_buffer("freqs", (1.0 / base**exponents).to(torch.get_default_device()))


class OutputHead(nn.Module):
    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.final_norm = TimestepNorm(config.model_dim, config.norm_num_groups, config.norm_eps)
        self.output = nn.Linear(config.model_dim, config.logits_dim, bias=False)

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """Float32 logits of the final norm's output y."""
        return fused_linear(y, self.output.weight, weight_scale=_weight_scale(self.output)).float()


class Megalodon(nn.Module):
    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.config = config
        # Given its weight, nn.Embedding skips its own init (reset_parameters makes ours); on the meta device
        # that init imports dynamo, ~1 s of every start of the app.
        self.embed = nn.Embedding(
            config.vocab_size, config.model_dim, _weight=torch.empty(config.vocab_size, config.model_dim)
        )
        self.rope = RotaryFrequencies(config.head_z_dim, config.rope_base)
        self.layers = nn.ModuleList(MegalodonLayer(config, i) for i in range(config.num_layers))
        self.output = OutputHead(config)
        if config.share_emb:
            self.output.output.weight = self.embed.weight
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.model_dim**-0.5
        nn.init.trunc_normal_(self.embed.weight, std=std, a=-2 * std, b=2 * std)
        if not self.config.share_emb:
            nn.init.trunc_normal_(self.output.output.weight, std=std, a=-2 * std, b=2 * std)
        for layer in self.layers:
            layer.mega.reset_parameters()
            layer.nffn.reset_parameters()

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_state(self, batch_size: int = 1) -> State:
        cfg, device = self.config, self.device
        layers = []
        for layer in self.layers:
            layers.append(
                LayerState(
                    norm=layer.mega.timenorm.initial_stats(batch_size),
                    cema_h=torch.zeros(batch_size, cfg.model_dim, cfg.cema_ndim, dtype=torch.complex64, device=device),
                    k=torch.zeros(batch_size, 0, cfg.num_heads, cfg.head_z_dim, dtype=self.dtype, device=device),
                    v=torch.zeros(batch_size, 0, cfg.num_heads, cfg.head_value_dim, dtype=self.dtype, device=device),
                )
            )
        recent = None
        if cfg.norm_refresh_after is not None:
            recent = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        return State(layers=layers, final_norm=self.output.final_norm.initial_stats(batch_size), recent_ids=recent)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x * math.sqrt(self.config.model_dim) if self.config.scale_emb else x
        return F.dropout(x, self.config.dropout) if self.training and self.config.dropout > 0 else x

    def forward(
        self, ids: torch.Tensor, state: State | None = None, *, compute_logits: bool = True
    ) -> torch.Tensor | None:
        """Logits [B, T, V] (float32) of `ids` [B, T], continuing from `state` and updating it.

        Without a state, the sequence starts fresh. `compute_logits=False` skips the output head."""
        if state is None:
            state = self.new_state(ids.shape[0])
        x = self.embed_ids(ids)
        positions = (state.position + torch.arange(ids.shape[1], device=ids.device)) % self.config.chunk_size
        rotations = rotation(self.rope.freqs, positions)  # the same for every layer
        for i, layer in enumerate(self.layers):
            x, state.layers[i] = layer(x, state.layers[i], state.position, rotations)
        y, state.final_norm = self.output.final_norm(x, state.final_norm)
        state.position += ids.shape[1]
        if state.recent_ids is not None:
            keep = self.config.norm_refresh_window * self.config.chunk_size
            state.recent_ids = torch.cat([state.recent_ids, ids], 1)[:, -keep:]
        if not compute_logits:
            return None
        return self.output.logits(y)

    # -- reading long inputs ------------------------------------------------------------------

    def _refresh_due(self, state: State) -> bool:
        after = self.config.norm_refresh_after
        chunk = self.config.chunk_size
        stride = self.config.norm_refresh_stride * chunk
        return after is not None and state.position >= after * chunk and state.position % stride == 0

    def _refresh_norms(self, state: State) -> None:
        """The authors' procedure: norm statistics from a fresh pass over the last few chunks."""
        fresh = self.new_state(state.batch_size)
        recent, chunk = state.recent_ids, self.config.chunk_size
        for start in range(0, recent.shape[1], chunk):  # chunk by chunk: memory stays that of one chunk
            self(recent[:, start : start + chunk], fresh, compute_logits=False)
        for layer, refreshed in zip(state.layers, fresh.layers, strict=True):
            layer.norm = refreshed.norm
        state.final_norm = fresh.final_norm

    def _calls(self, length: int, state: State) -> Iterator[slice]:
        """Split `length` new tokens into calls: up to the next chunk boundary, then whole calls of
        `norm_refresh_stride` chunks (one chunk when no refresh), then the rest."""
        chunk = self.config.chunk_size
        step = chunk * (self.config.norm_refresh_stride if self.config.norm_refresh_after is not None else 1)
        start = 0
        head = (-state.position) % step
        if head:
            yield slice(0, min(head, length))
            start = min(head, length)
        while start < length:
            yield slice(start, min(start + step, length))
            start += step

    @torch.inference_mode()
    def read(
        self,
        ids: torch.Tensor | list[int],
        state: State,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Stream `ids` ([T] or [B, T]) into `state`, whole chunks at a time, leaving it at the last
        chunk boundary. Returns the tail: the ids after that boundary (fewer than a chunk), which a
        question re-feeds. `on_chunk(tokens_done, tokens_total)` is called after each call."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if ids.dim() == 1:
            ids = ids[None]
        chunk = self.config.chunk_size
        boundary = ((state.position + ids.shape[1]) // chunk) * chunk - state.position
        body = ids[:, : max(boundary, 0)]
        for span in self._calls(body.shape[1], state):
            self(body[:, span], state, compute_logits=False)
            if self._refresh_due(state):
                self._refresh_norms(state)
            if on_chunk is not None:
                on_chunk(span.stop, ids.shape[1])
        return ids[:, body.shape[1] :]

    @torch.inference_mode()
    def score(self, ids: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Logits of every position of `ids` [B, T], computed the way `read` reads a document
        (the norm-statistic refresh included when the config has it); the ragged tail included."""
        if state is None:
            state = self.new_state(ids.shape[0])
        logits = []
        for span in self._calls(ids.shape[1], state):
            logits.append(self(ids[:, span], state))
            if span.stop < ids.shape[1] and self._refresh_due(state):
                self._refresh_norms(state)
        return torch.cat(logits, 1)

    def generate(
        self, prompt_ids: torch.Tensor | list[int], state: State, config: GenerationConfig | None = None
    ) -> Iterator[int]:
        """Token ids continuing `prompt_ids` from `state` (see megadoc.engine.generation)."""
        from megadoc.engine.generation import GenerationConfig, generate

        return generate(self, prompt_ids, state, config or GenerationConfig())

    # -- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Megalodon:
        from megadoc.engine.checkpoint import load_pretrained

        return load_pretrained(name_or_path, device=device, dtype=dtype)

    def save_pretrained(self, directory: str | Path, tokenizer_path: str | Path | None = None) -> None:
        from megadoc.engine.checkpoint import save_pretrained

        save_pretrained(self, directory, tokenizer_path)
