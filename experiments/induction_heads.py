"""Induction heads: does attention look up the token after an earlier copy of the current one?

`python -m experiments.induction_heads TEXT_FILE [--model mini] [--tokens 128] [--start 30000]`
reads BOS, a passage of the file and the same passage again in one attention chunk, and prints
per layer and head the mean attention weight that the second reading's queries put on the token
after their earlier copy (what an induction head attends to; uniform attention gives ~1/position),
first on the passage, then on its tokens shuffled (so memory of the text cannot stand in)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from megadoc.pipeline.registry import load


def induction_weights(model, ids: torch.Tensor) -> list[list[float]]:
    """Per layer, per head: mean attention weight from each second-reading position on the
    position after its first-reading copy. `ids` [L] is the passage."""
    length = ids.numel()
    captured = []
    for layer in model.layers:

        def capture(t, c, rotations, params=None, project=layer.mega.project):
            outputs = project(t, c, rotations, params)
            captured.append(outputs[1:3])
            return outputs

        layer.mega.project = capture
    try:
        with torch.inference_mode():
            model(torch.cat([torch.ones(1, dtype=torch.long), ids, ids])[None])
    finally:
        for layer in model.layers:
            del layer.mega.project
    rows = torch.arange(1 + length, 2 * length)  # second-reading positions that have a next token
    weights = []
    for q, k in captured:
        scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float())[0]
        causal = torch.ones(scores.shape[-1], scores.shape[-1], dtype=torch.bool).tril()
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        weights.append(probs[:, rows, rows - length + 1].mean(-1).tolist())
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", type=Path)
    parser.add_argument("--model", default="mini")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--start", type=int, default=30000, help="character offset of the passage")
    args = parser.parse_args()
    loaded = load(args.model, torch.device("cpu"))
    text = args.text.read_text(encoding="utf-8", errors="replace")
    ids = torch.tensor(loaded.tokenizer.encode(text[args.start : args.start + 40 * args.tokens])[: args.tokens])
    shuffled = ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(0))]
    print("| layer | passage: weight on the induction target, per head | shuffled tokens |\n|---|---|---|")
    for layer, (plain, mixed) in enumerate(
        zip(induction_weights(loaded.model, ids), induction_weights(loaded.model, shuffled), strict=True)
    ):
        print(f"| {layer} | {', '.join(f'{w:.3f}' for w in plain)} | {', '.join(f'{w:.3f}' for w in mixed)} |")


if __name__ == "__main__":
    main()
