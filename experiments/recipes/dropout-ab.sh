#!/usr/bin/env bash
# Does dropout help `mini`, whose pretraining passes ~15 times over its 53M tokens of books?
# (MODEL_CARD.md "Dropout, measured small".) Two pretrainings of 650 steps on a 100-book sample of the
# training books, the same recipe and seed without and with dropout 0.1 (mini-dropout-off.toml,
# mini-dropout-on.toml), then each one's bits per byte on the 10 largest held-out books at
# 1K/4K/16K tokens of context (the card's measure; bf16 on a GPU) and its training speed.
#
#   dropout-ab.sh HELDOUT    HELDOUT: written by `python -m megadoc.training.rows heldout`
#
# Run in the repository root on one GPU with runs/data/ab-tokens built (train_data pretrain --books
# on the sample: `random.Random(10).sample(sorted(train), 100)` of engine.corpus.split_books).
# Writes runs/dropout-ab.json.
set -euo pipefail
heldout=$1
for arm in off on; do
  bash recipes/mini/train_mini_gpu.sh train "mini-dropout-$arm"
done
python3 - "$heldout" <<'PY'
import json, statistics, sys
from pathlib import Path

import torch

from megadoc.engine import Megalodon, Tokenizer
from megadoc.evals.perplexity import bits_per_byte

texts = [p.read_text() for p in sorted(Path(sys.argv[1]).glob("*.txt"), key=lambda p: p.stat().st_size)[-10:]]
tokenizer = Tokenizer.load("megadoc/models/mini/tokenizer.model")
cuda = torch.cuda.is_available()  # (megadoc.pipeline.registry would pick the same, but needs the app's packages)
device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
rows = {}
for arm in ("off", "on"):
    run = Path(f"runs/mini-dropout-{arm}")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    model = Megalodon.from_pretrained(run / "checkpoint", device=device, dtype=dtype)
    results = bits_per_byte(model, tokenizer, texts, [1024, 4096, 16384])
    rows[arm] = {
        "bits_per_byte": {r.context: round(r.bits_per_byte, 4) for r in results},
        "final_loss": round(statistics.mean(r["loss"] for r in log[-10:]), 4),
        "tokens": log[-1]["tokens"], "minutes": log[-1]["minutes"],
        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in log[1:]),
    }
    print(arm, json.dumps(rows[arm]), flush=True)
Path("runs/dropout-ab.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
