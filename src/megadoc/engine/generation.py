"""Decoding: sampling settings, a token-id generator, and a text stream with stop strings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from megadoc.engine.state import State

if TYPE_CHECKING:
    from megadoc.engine.model import Megalodon
    from megadoc.engine.tokenizer import Tokenizer


# Capturing the 7B's decoding step takes ~0.4 s (a few eager steps); each step then runs in ~13 ms instead of
# ~100 ms (benchmarks/SPEED.md), so from this many tokens on the graph is a clear win.
STATIC_DECODE_MIN_TOKENS = 16


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    stop_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    seed: int | None = None
    no_repeat_ngram: int = 0  # n > 0: never generate an n-gram the answer already holds (batch row 0)


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next ids [B] from logits [B, V] under temperature, top-k and top-p (nucleus) filtering."""
    if config.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / config.temperature
    if config.top_k > 0:
        kth = torch.topk(logits, min(config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass.
        drop = probs.cumsum(-1) - probs > config.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


class RepeatBan:
    """The tokens that would repeat an n-gram of the ids produced so far (`no_repeat_ngram`)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.produced: list[int] = []
        self.followers: dict[tuple[int, ...], set[int]] = {}

    def add(self, token: int) -> None:
        self.produced.append(token)
        if len(self.produced) >= self.n:
            gram = tuple(self.produced[-self.n :])
            self.followers.setdefault(gram[:-1], set()).add(gram[-1])

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Row 0 of logits [B, V] with the banned tokens at -inf (a copy when any is banned)."""
        if len(self.produced) < self.n - 1:
            return logits
        banned = self.followers.get(tuple(self.produced[len(self.produced) - (self.n - 1) :]))
        if not banned:
            return logits
        logits = logits.clone()
        logits[0, list(banned)] = float("-inf")
        return logits


def static_decoding(model: Megalodon, config: GenerationConfig) -> bool:
    """Whether `generate` decodes through the CUDA-graph `StaticDecoder`."""
    return model.device.type == "cuda" and config.max_new_tokens >= STATIC_DECODE_MIN_TOKENS


@torch.inference_mode()
def generate(
    model: Megalodon, prompt_ids: torch.Tensor | Sequence[int], state: State, config: GenerationConfig
) -> Iterator[int]:
    """Feed `prompt_ids` (non-empty) into `state`, then yield up to `max_new_tokens` ids of batch row 0.

    Stops after a stop id (which is yielded). `state` advances as tokens are produced; on CUDA, for
    `STATIC_DECODE_MIN_TOKENS` or more, the tokens run as CUDA-graph steps (engine/decode.py) and
    `state` catches up when the generator ends or is closed."""
    ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=model.device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.shape[1] == 0:
        raise ValueError("generate needs at least one prompt token")
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(config.seed)
    logits = model(ids, state)[:, -1]
    stop = set(config.stop_ids)
    decoder = None
    if static_decoding(model, config):
        from megadoc.engine.decode import decoder_for

        decoder = decoder_for(model, state)
    repeats = RepeatBan(config.no_repeat_ngram) if config.no_repeat_ngram > 0 else None
    try:
        for _ in range(config.max_new_tokens):
            token = sample(logits if repeats is None else repeats.apply(logits), config, generator)
            value = int(token[0])
            if repeats is not None:
                repeats.add(value)
            yield value
            if value in stop:
                return
            logits = model(token[:, None], state)[:, -1] if decoder is None else decoder.step(token)
    finally:
        if decoder is not None:
            try:
                reached = decoder.to_state()
                state.layers, state.final_norm = reached.layers, reached.final_norm
                state.recent_ids, state.position = reached.recent_ids, reached.position
            finally:
                decoder.busy = False


@torch.inference_mode()
def continuation_logprobs(
    model: Megalodon, prompt_ids: Sequence[int], state: State, continuations: Sequence[Sequence[int]]
) -> list[float]:
    """The log-probability of each continuation (a non-empty list of ids) right after `prompt_ids`
    (non-empty), continuing from `state`, which is left as it was."""
    state = state.clone()
    device = model.device
    after_prompt = model(torch.as_tensor([list(prompt_ids)], device=device), state)[0, -1].log_softmax(-1)
    scores = []
    for ids in continuations:
        total = float(after_prompt[ids[0]])
        if len(ids) > 1:
            inside = model(torch.as_tensor([list(ids[:-1])], device=device), state.clone())[0].log_softmax(-1)
            total += float(inside.gather(-1, torch.as_tensor(ids[1:], device=device)[:, None]).sum())
        scores.append(total)
    return scores


def stream_text(
    model: Megalodon,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    state: State,
    config: GenerationConfig,
) -> Iterator[str]:
    """Generated text, piece by piece, never splitting a multi-byte character; ends at EOS or a
    stop string (neither is emitted). Text that could still become a stop string is held back."""
    from megadoc.engine.tokenizer import IncrementalDecoder

    decoder = IncrementalDecoder(tokenizer)
    stop_ids = {*config.stop_ids, tokenizer.eos_id}
    pending = ""
    hold = max((len(s) for s in config.stop_strings), default=0)
    for token in generate(model, prompt_ids, state, config):
        if token in stop_ids:
            break
        pending += decoder.push(token)
        cut = min((i for i in (pending.find(s) for s in config.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            if cut:
                yield pending[:cut]
            return
        safe = len(pending) - hold + 1 if hold else len(pending)
        if safe > 0:
            yield pending[:safe]
            pending = pending[safe:]
    pending += decoder.flush()
    cut = min((i for i in (pending.find(s) for s in config.stop_strings) if i >= 0), default=len(pending))
    if pending[:cut]:
        yield pending[:cut]
