#!/usr/bin/env bash
# Train `mini` on one GPU from carried data: .carry/books (*.txt.gz), .carry/qmsum-train.tar.gz.
# Writes the exported model to $OUT in <16 MB parts (join with cat) plus the training logs.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1  # import the installed package, not ./megadoc
python3 -m pip install -q --no-deps --no-build-isolation --root-user-action=ignore . 2>&1 | grep -v "^WARNING" || true
python3 -c "import megadoc.engine, sys; print(megadoc.engine.__file__)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p runs/data && tar -xzf .carry/qmsum-train.tar.gz -C runs/data
TOK=megadoc/models/mini/tokenizer.model
python3 -m megadoc.engine.train_data pretrain --books .carry/books --tokenizer $TOK --out runs/data/tokens
# Tuning rows are built on the CPU while the GPU pretrains.
nice python3 -m megadoc.engine.train_data tune --books .carry/books --qmsum runs/data/train --tokenizer $TOK \
  --out runs/data/tune.npz --per-book ${PER_BOOK:-12} > runs/tune-data.log 2>&1 &
python3 -m megadoc.engine.train recipes/${PRETRAIN_RECIPE:-mini-pretrain}.toml
wait
cat runs/tune-data.log
python3 -m megadoc.engine.train recipes/mini-tune.toml
python3 -m megadoc.engine.train export runs/mini-tune/checkpoint runs/mini $TOK
mkdir -p $OUT/mini
cp runs/mini/config.json $OUT/mini/
split -b 15M runs/mini/model.safetensors $OUT/mini/model.safetensors.part-
cp runs/mini-pretrain/log.jsonl $OUT/pretrain-log.jsonl; cp runs/mini-tune/log.jsonl $OUT/tune-log.jsonl
ls -la $OUT/mini
