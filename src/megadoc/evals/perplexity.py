"""Bits per byte against context length, on the same final stretch of each text; and the repeat
test, whether the model copies what its attention window already holds.

Definition (also in `megadoc eval ppl --help`): let T be the smallest context length asked for.
At context length N, a fresh state reads BOS then the last N tokens of a text, and the loss counted
is the model's loss on the text's final T tokens only, so every N scores the same tokens and
differs only in how much text came before them. Bits per byte = (sum of the natural-log losses of
those tokens) / ln 2 / (UTF-8 bytes of their text), summed over every text that has at least N
tokens (shorter ones are left out at that N and the result says how many were used).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from megadoc.engine import Megalodon, Tokenizer


@dataclass(frozen=True)
class ContextResult:
    context: int
    texts: int  # texts long enough to be scored at this context
    tokens: int
    bytes: int
    bits_per_byte: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScoredText:
    """A text's ids (no BOS) and the UTF-8 bytes of the final stretch that is scored."""

    ids: list[int]
    target_bytes: int


def prepare(text: str, tokenizer: Tokenizer, target_tokens: int) -> ScoredText:
    ids, offsets = tokenizer.encode_with_offsets(text)
    first = max(len(ids) - target_tokens, 0)
    start = offsets[first][0] if ids else len(text)
    return ScoredText(ids, len(text[start:].encode("utf-8")))


@torch.inference_mode()
def target_loss(model: Megalodon, tokenizer: Tokenizer, ids: list[int], context: int, target_tokens: int) -> float:
    """Summed loss (nats) of the last `target_tokens` ids after reading BOS + the last `context` ids.

    The context before the scored stretch goes through `read` (no logits kept), so memory does not
    grow with the context."""
    window = ids[-context:]
    sequence = ([tokenizer.bos_id] if tokenizer.bos_id >= 0 else []) + window
    inputs, targets = sequence[:-1], sequence[1:]
    scored = min(target_tokens, len(targets))
    state = model.new_state()
    tail = model.read(inputs[: len(inputs) - scored], state)
    rest = torch.as_tensor(inputs[len(inputs) - scored :], dtype=torch.long, device=model.device)[None]
    logits = model.score(torch.cat([tail, rest], dim=1), state)[0, -scored:]
    expected = torch.as_tensor(targets[-scored:], dtype=torch.long, device=model.device)
    return float(F.cross_entropy(logits.float(), expected, reduction="sum"))


def bits_per_byte(model: Megalodon, tokenizer: Tokenizer, texts: list[str], contexts: list[int]) -> list[ContextResult]:
    """One result per context length (see the module docstring for the definition)."""
    target = min(contexts)
    prepared = [prepare(text, tokenizer, target) for text in texts]
    results = []
    for context in contexts:
        usable = [p for p in prepared if len(p.ids) >= context]
        nats = sum(target_loss(model, tokenizer, p.ids, context, target) for p in usable)
        size = sum(p.target_bytes for p in usable)
        value = nats / math.log(2) / size if usable and size else None
        results.append(ContextResult(context, len(usable), target * len(usable), size, value))
    return results


@dataclass(frozen=True)
class RepeatResult:
    """Mean loss (nats/token) on passages read once and on the same passages read again right after."""

    passages: int
    passage_tokens: int
    first: float
    second: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def repeat_loss(
    model: Megalodon, tokenizer: Tokenizer, texts: list[str], passage_tokens: int, per_text: int
) -> RepeatResult:
    """The repeat test: BOS, a passage, the same passage again, all in one attention chunk.

    A model that copies through attention predicts the second reading far better than the first
    (an induction head's signature); one that cannot scores them alike. Passages are `per_text`
    evenly spaced stretches of `passage_tokens` ids from each text long enough."""
    if passage_tokens < 1 or per_text < 1:
        raise ValueError("passages need at least one token, and each text at least one passage")
    if 2 * passage_tokens + 1 > model.config.chunk_size:
        chunk = model.config.chunk_size
        raise ValueError(f"a passage of {passage_tokens} tokens read twice does not fit one {chunk}-token chunk")
    passages = []
    for text in texts:
        ids = tokenizer.encode(text)
        room = len(ids) - passage_tokens
        if room >= 0:
            passages += [ids[i * room // per_text : i * room // per_text + passage_tokens] for i in range(per_text)]
    if not passages:
        raise ValueError(f"no text has {passage_tokens} tokens")
    first = second = 0.0
    for passage in passages:
        ids = torch.as_tensor([tokenizer.bos_id, *passage, *passage], dtype=torch.long, device=model.device)[None]
        losses = F.cross_entropy(model.score(ids[:, :-1])[0].float(), ids[0, 1:], reduction="none")
        first += float(losses[:passage_tokens].mean())
        second += float(losses[passage_tokens:].mean())
    return RepeatResult(len(passages), passage_tokens, first / len(passages), second / len(passages))
