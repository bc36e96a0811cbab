"""Ship a trained model: `python -m megadoc.training.export CHECKPOINT_DIR OUT_DIR TOKENIZER`.

A checkpoint holds float32 weights and the optimizer state for resuming; what ships is the model
alone, half the size, beside the tokenizer it was trained with."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from megadoc.engine import Megalodon
from megadoc.training.loop import is_projection


def export(checkpoint: str | Path, out: str | Path, tokenizer: str | Path) -> None:
    """Ship a trained model: projection and embedding matrices in bf16, the rest (CEMA, norms, q/k
    scales) in float32, with its tokenizer. Loading casts everything to the runtime dtype."""
    model = Megalodon.from_pretrained(checkpoint, dtype=torch.float32)
    for name, param in model.named_parameters():
        if is_projection(name, param):
            param.data = param.data.to(torch.bfloat16)
    model.save_pretrained(out, tokenizer)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        raise SystemExit("usage: python -m megadoc.training.export CHECKPOINT_DIR OUT_DIR TOKENIZER")
    export(*args)


if __name__ == "__main__":
    main()
