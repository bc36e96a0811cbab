"""One-token decoding steps over fixed-shape buffers, captured in a CUDA graph on the GPU.

Decoding one token launches ~1,300 small kernels from Python: at batch 1 the launches, not the
weights' bytes, set the step time (benchmarks/SPEED.md). `StaticDecoder` keeps the whole streaming
state in buffers whose shapes never change: the chunk's keys and values sit in [B, h, C, d]
buffers, written at the in-chunk position (a device tensor) and read up to the slot `position % C`
(kernels/attention.py's `decode_attention`), so a full chunk empties by the position wrapping to 0,
with no Python branch on a device value. One step is then the same kernels on the same addresses
every token: captured once in a `torch.cuda.CUDAGraph`, it replays with one launch. On the CPU the
same step runs eagerly (how CI tests it).

The step runs the model's own modules (`MovingAverageGatedAttention.project` / `.gate`, the
timestep norms' parameters, `NormalizedFeedForward`) and the kernels' step functions; only the
cache write is its own. What depends on the parameters alone is computed once per decoder, not per
token: the CEMA coefficients with their decay q, the norms' float32 scales, the q/k scales and
shifts (`_LayerParams`; refreshed in place by `reset`). The rotary factors of the token's position
are computed once per step, for all layers.

With `grouped` (opt-in until a GPU run measures it: benchmarks/KERNELS-NOTES.md has only its
prediction) the three reads of m, wz, wr and wh1, go through one launch of the fused linear
kernel (`MovingAverageGatedAttention.m_group`: their weights concatenated once per decoder, a copy
of ~24% of a 7B's weights): each launch costs ~3.6 us whatever its size (benchmarks/KERNELS-NOTES.md),
and wh1's output only depends on m and the layer's input, so it is computed before the attention.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from megadoc.engine.model import FeedForwardParams, Megalodon, MegalodonLayer, ProjectionParams, TimestepNorm
from megadoc.engine.state import LayerState, State
from megadoc.kernels.attention import decode_attention, rotation, write_slot
from megadoc.kernels.cema import CemaCoefficients, cema_step
from megadoc.kernels.timestep_norm import NormStats, timestep_norm_step

WARMUP_STEPS = 2  # eager steps before capture: Triton compiles and cuBLAS picks its kernels


@dataclass(frozen=True)
class _StepCoefficients(CemaCoefficients):
    """The CEMA coefficients with the decay q = exp(log_q) kept: computed per call, it is a kernel
    per layer and step."""

    decay: torch.Tensor

    @property
    def q(self) -> torch.Tensor:
        return self.decay

    @classmethod
    def of(cls, coeffs: CemaCoefficients) -> _StepCoefficients:
        return cls(coeffs.p, coeffs.log_q, coeffs.g, coeffs.omega, decay=coeffs.q)


@dataclass
class _LayerParams:
    """What a layer's step needs from its parameters alone: computed at construction, refreshed in
    place by `StaticDecoder.reset` (a captured graph reads these addresses)."""

    coeffs: _StepCoefficients
    projection: ProjectionParams
    ffn: FeedForwardParams

    @classmethod
    def of(cls, layer: MegalodonLayer, grouped: bool) -> _LayerParams:
        """`grouped`: with the layer's `m_group` (wz, wr and wh1 read in one launch)."""
        projection = layer.mega.projection_params()
        if grouped:
            projection.m_group = layer.mega.m_group()
        return cls(_StepCoefficients.of(layer.mega.cema.coefficients()), projection, layer.nffn.norm_params())

    def copy_(self, layer: MegalodonLayer) -> None:
        """Recompute from `layer`'s parameters as they are now, in place."""
        src = _LayerParams.of(layer, grouped=False)
        for name in ("coeffs", "projection", "ffn"):
            _copy_fields(getattr(self, name), getattr(src, name))
        if self.projection.m_group is not None:
            layer.mega.m_group(out=self.projection.m_group)


def _copy_fields(dst: object, src: object) -> None:
    """Copy dataclass `src`'s tensors into `dst`'s, in place (None stays None; other fields are left)."""
    for field in dataclasses.fields(dst):
        tensor = getattr(dst, field.name)
        if isinstance(tensor, torch.Tensor):
            tensor.copy_(getattr(src, field.name))


@dataclass
class _LayerBuffers:
    norm: NormStats
    cema_h: torch.Tensor  # [B, D, N] complex64
    k: torch.Tensor  # [B, h, C, zh]: slots <= the in-chunk position are valid; heads first, so that
    v: torch.Tensor  # [B, h, C, dv]   the attention's batched products read the buffers in place
    params: _LayerParams


def _timestep_norm(norm: TimestepNorm, x: torch.Tensor, stats: NormStats) -> torch.Tensor:
    """`norm` on one token x [B, 1, D]; advances `stats` in place (on CUDA inside the kernel: no copies)."""
    y, _ = timestep_norm_step(x[:, 0], stats, norm.weight, norm.bias, norm.eps, out=stats)
    return y[:, None]


def _layer_step_of(
    normalize: Callable[..., torch.Tensor],
    cema: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    write: Callable[..., None],
    attend: Callable[..., torch.Tensor],
) -> Callable[..., torch.Tensor]:
    """One layer's decoding step, calling the given timestep norm, CEMA step, cache write and attention."""

    def layer_step(
        layer: MegalodonLayer, buf: _LayerBuffers, x: torch.Tensor, in_chunk: torch.Tensor, rotations: torch.Tensor
    ) -> torch.Tensor:
        """One layer on one token x [B, 1, D] at the in-chunk slot `in_chunk`, whose rotary factors are
        `rotations` [1, zh/2]: advances the layer's buffers, returns its output."""
        mega, params = layer.mega, buf.params
        t = normalize(mega.timenorm, x, buf.norm)
        c, cema_h = cema(t[:, 0], params.coeffs, buf.cema_h)
        m, q, k, v, r, h = mega.project(x, t, c[:, None], rotations, params.projection)
        write(buf.k, buf.v, k, v, in_chunk)
        y = mega.gate(x, m, attend(q, buf.k, buf.v, in_chunk), r, h)
        buf.cema_h.copy_(cema_h)
        return layer.nffn(y, residual=x, params=params.ffn)

    return layer_step


_layer_step = _layer_step_of(_timestep_norm, cema_step, write_slot, decode_attention)


@functools.cache
def _compiled_layer_step() -> Callable[..., torch.Tensor]:
    """The layer step through torch.compile: fuses the ~100 small kernels of a layer into a few dozen.
    One compilation serves every layer (the modules' parameters are inputs, not constants).

    The four ops stay out of the compiled graph: the Triton CEMA step's wrapper views complex tensors
    as real ones, which inductor does not compile; inductor's fused kernel of the float64 norm step
    fails in Triton 3.6; the Triton kernels of the norm step, the attention and the cache write run as
    they are. Built on first use, since `torch.compiler.disable` imports dynamo (~1 s of every start)."""
    keep_out = torch.compiler.disable
    step = _layer_step_of(
        keep_out(_timestep_norm), keep_out(cema_step), keep_out(write_slot), keep_out(decode_attention)
    )
    return torch.compile(step, dynamic=False)


class StaticDecoder:
    """Decodes one token per `step` from a copy of `state`; `to_state()` gives the state reached.

    The model's parameters must not change while a decoder is in use (what the step derives from
    them is computed at construction and at `reset`). `step` returns a buffer that the next step overwrites.
    `reset(state)` starts over from another state on the same buffers and graph: `decoder_for` keeps
    one decoder per model and batch size, so each answer does not capture (and keep) a new graph."""

    busy = False  # lent out by `decoder_for` until its user sets it back (a second user gets its own)

    @torch.inference_mode()
    def __init__(
        self, model: Megalodon, state: State, graph: bool = True, compiled: bool = False, grouped: bool = False
    ) -> None:
        """`graph=False` runs the steps eagerly on CUDA too (to compare against the replay);
        `compiled=True` runs each layer through torch.compile (its first steps compile, ~a minute);
        `grouped` reads wz, wr and wh1 in one launch (on CUDA, where that saves launches; elsewhere
        the group's reference runs the three calls anyway)."""
        cfg, device = model.config, model.device
        self.grouped = grouped
        self._layer_step = _compiled_layer_step() if compiled else _layer_step
        self.model, self.chunk = model, cfg.chunk_size
        batch = state.batch_size
        self._position = torch.zeros(1, dtype=torch.long, device=device)  # mirrors `self.position`
        self._ids = torch.zeros(batch, dtype=torch.long, device=device)
        self._final = state.final_norm.clone()
        self._layers = []
        for layer, ls in zip(model.layers, state.layers, strict=True):
            self._layers.append(
                _LayerBuffers(
                    norm=ls.norm.clone(),
                    cema_h=ls.cema_h.clone(),
                    k=torch.zeros(batch, ls.k.shape[2], self.chunk, ls.k.shape[3], dtype=ls.k.dtype, device=device),
                    v=torch.zeros(batch, ls.v.shape[2], self.chunk, ls.v.shape[3], dtype=ls.v.dtype, device=device),
                    params=_LayerParams.of(layer, self.grouped),
                )
            )
        self._begin(state)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._logits = self._capture(state) if graph and device.type == "cuda" else None

    @property
    def cache_nbytes(self) -> int:
        """Bytes of the key and value buffers (a step reads the slots filled so far)."""
        return sum(b.k.nbytes + b.v.nbytes for b in self._layers)

    @torch.inference_mode()
    def reset(self, state: State) -> None:
        """Start over from `state` (same batch size and dtypes), with the parameters as they are now."""
        if state.batch_size != self._ids.shape[0]:
            raise ValueError(f"decoder of batch {self._ids.shape[0]} cannot take a state of batch {state.batch_size}")
        for layer, buf in zip(self.model.layers, self._layers, strict=True):
            buf.params.copy_(layer)
        self._begin(state)

    def _begin(self, state: State) -> None:
        """Take `state`'s host-side fields (the token count, metadata, recent ids) and its tensors."""
        self.position = state.position  # the host's count of tokens
        self._metadata = dict(state.metadata)
        self._recent = None if state.recent_ids is None else [state.recent_ids]
        self._load(state)

    def _load(self, state: State) -> None:
        """Copy `state` into the buffers (again after the warm-up steps, which advanced them)."""
        self._position.fill_(state.position)
        self._final.copy_(state.final_norm)
        for buf, ls in zip(self._layers, state.layers, strict=True):
            buf.norm.copy_(ls.norm)
            buf.cema_h.copy_(ls.cema_h)
            buf.k[:, :, : ls.k.shape[1]] = ls.k.transpose(1, 2)
            buf.v[:, :, : ls.v.shape[1]] = ls.v.transpose(1, 2)

    def _capture(self, state: State) -> torch.Tensor:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self._load(state)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            logits = self._run()
        return logits

    def _run(self) -> torch.Tensor:
        """One step on the buffers: reads `_ids`, advances every buffer, returns logits [B, V] float32."""
        model = self.model
        x = model.embed_ids(self._ids[:, None])  # [B, 1, D]
        in_chunk = torch.remainder(self._position, self.chunk)  # [1]: the slot this token fills
        rotations = rotation(model.rope.freqs, in_chunk)
        for layer, buf in zip(model.layers, self._layers, strict=True):
            x = self._layer_step(layer, buf, x, in_chunk, rotations)
        y = _timestep_norm(model.output.final_norm, x, self._final)
        self._position.add_(1)
        return model.output.logits(y[:, 0])

    @torch.inference_mode()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids [B] (one token per row); logits [B, V] float32, valid until the next step."""
        self._ids.copy_(ids.reshape(-1))
        if self._recent is not None:
            self._recent.append(self._ids[:, None].clone())
            if len(self._recent) > self.chunk:
                self._compact_recent()
        self.position += 1
        if self._graph is None:
            return self._run()
        self._graph.replay()
        return self._logits

    def _compact_recent(self) -> None:
        """The recent ids as one tensor, trimmed as `Megalodon.forward` trims them."""
        keep = self.model.config.norm_refresh_window * self.chunk
        self._recent = [torch.cat(self._recent, 1)[:, -keep:]]

    @torch.inference_mode()
    def to_state(self) -> State:
        """The streaming state reached, as the normal path holds it (keys and values trimmed to the chunk)."""
        filled = self.position % self.chunk

        def cache(buffer: torch.Tensor) -> torch.Tensor:
            return buffer[:, :, :filled].transpose(1, 2).clone(memory_format=torch.contiguous_format)

        layers = [
            LayerState(norm=b.norm.clone(), cema_h=b.cema_h.clone(), k=cache(b.k), v=cache(b.v)) for b in self._layers
        ]
        recent = None
        if self._recent is not None:
            self._compact_recent()
            recent = self._recent[0].clone()
        return State(
            layers=layers,
            final_norm=self._final.clone(),
            position=self.position,
            recent_ids=recent,
            metadata=dict(self._metadata),
        )


def decoder_for(model: Megalodon, state: State) -> StaticDecoder:
    """The model's decoder for `state`'s batch size, reset to `state`: built (and on CUDA captured)
    once, then reused. A decoder is kept per batch size and per set of parameter tensors (moving the
    model to another device or dtype makes new ones): destroying a captured graph does not give all
    of its memory back (33 MiB per graph for `mini`, measured), so graphs are made once, not per answer."""
    weights = tuple(p.data_ptr() for p in model.parameters())
    decoders: dict[int, tuple[tuple[int, ...], StaticDecoder]] = model.__dict__.setdefault("_static_decoders", {})
    cached = decoders.get(state.batch_size)
    if cached is not None and cached[0] == weights and not cached[1].busy:
        decoder = cached[1]
        decoder.reset(state)
    else:
        decoder = StaticDecoder(model, state)
        if cached is None or cached[0] != weights:
            decoders[state.batch_size] = (weights, decoder)
    decoder.busy = True
    return decoder
