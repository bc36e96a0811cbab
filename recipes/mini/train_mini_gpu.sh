#!/usr/bin/env bash
# Train `mini` on one GPU in steps that each fit one device call (at most 64 MiB carried, 10 minutes).
# Run in the repository root; runs/ must outlive the calls (on the device machine: a link to a folder
# outside the work tree, kept while the machine stays warm).
#
#   train_mini_gpu.sh tokens BOOKS                  tokenize BOOKS' training books into runs/data/tokens
#                                                   (the books may come in parts: each adds shards)
#   train_mini_gpu.sh tune-data BOOKS QMSUM NAME N [SEED]
#                                                   tuning rows, N questions a book, -> runs/data/NAME.npz
#   train_mini_gpu.sh train RECIPE [SECONDS]        train (resuming RECIPE's run); after SECONDS a
#                                                   SIGTERM saves the checkpoint for the next call
#   train_mini_gpu.sh export RUN OUT                RUN's checkpoint as a shippable model in OUT, with
#                                                   its weights also in <16 MB parts (a call returns those)
#
# Round 9 ran these steps in order with recipes/mini-round9.sh (MODEL_CARD.md, "Round 9").
set -euo pipefail
export PYTHONUNBUFFERED=1
TOKENIZER=src/megadoc/models/mini/tokenizer.model

case "${1:-}" in
  tokens)
    python3 -m megadoc.training.rows pretrain --books "$2" --tokenizer $TOKENIZER --out runs/data/tokens ;;
  tune-data)
    python3 -m megadoc.training.rows tune --books "$2" --qmsum "$3" --tokenizer $TOKENIZER \
      --out "runs/data/$4.npz" --per-book "$5" --seed "${6:-0}" ;;
  train)
    timeout -s TERM "${3:-0}" python3 -m megadoc.training.loop "recipes/$2.toml" ;;
  export)
    python3 -m megadoc.training.export "runs/$2/checkpoint" "$3" $TOKENIZER
    mkdir -p "$3/parts" && split -b 15M "$3/model.safetensors" "$3/parts/model.safetensors.part-" ;;
  *)
    sed -n '2,13p' "$0"; exit 2 ;;
esac
