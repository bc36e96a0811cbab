#!/usr/bin/env bash
# Round 9 of `mini` on one GPU, start to finish (MODEL_CARD.md "Round 9"): the whole 17-minute
# signed pretraining, then two tuning stages from its float32 checkpoint, as round 4's lineage was
# tuned (a 16K-token stage, then the 2K recall-layout stage), and an export of each model.
#
#   mini-round9.sh BOOKS QMSUM      BOOKS: the book sample for the tuning rows, QMSUM: QMSum train/
#
# Run in the repository root with runs/data/tokens built (train_mini_gpu.sh tokens). The tuning rows
# are built beside the pretraining; BOOKS may arrive while it runs (on the device machine a later
# call carries them and moves the folder into place), so that step waits for the folder.
# Outputs: runs/mini-pretrained, runs/mini-round9.
set -euo pipefail
steps=recipes/mini/train_mini_gpu.sh
books=$1 qmsum=$2

tune_data() {
  until [ -d "$books" ]; do sleep 5; done
  bash $steps tune-data "$books" "$qmsum" tune-reading 10 9 &
  bash $steps tune-data "$books" "$qmsum" tune-recall 60 9
  wait
}

tune_data > runs/tune-data.log 2>&1 &
builder=$!
bash $steps train mini-pretrain-signed
bash $steps export mini-pretrain-signed runs/mini-pretrained
wait $builder
bash $steps train mini-tune9-reading
bash $steps train mini-tune9-recall
bash $steps export mini-tune9-recall runs/mini-round9
