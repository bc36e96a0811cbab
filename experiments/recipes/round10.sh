#!/usr/bin/env bash
# Round 10 of `mini` on one GPU (MODEL_CARD.md "Round 10"), across back-to-back device calls
# that each carry part of the data (a call carries at most 64 MiB, the repository included):
#
#   round10.sh start         call 1: unpack .carry/c1 (token shards) and start the round in the
#                            background (setsid), on the code snapshot .carry/src (the package
#                            as tested here, without the weights; the shipped weights are the repo's)
#   round10.sh unpack DIR    later calls: unpack DIR's *.xz (token shards, tuning rows, eval data)
#   round10.sh install       install the carried wheels (.whl, .carry/pysite) that scoring needs
#   round10.sh wait SECONDS  wait for the round's end (or SECONDS), copy what is done to $OUT
#
# The round (`round10.sh run`, in the background): pretraining on the shards as they land
# (mini-pretrain10.toml), tuning once the rows have come (mini-tune10.toml), an export of each,
# then the scores of the new model and of the shipped one on the same GPU: held-out bits/byte,
# the who-questions, QMSum validation (as many of the 272 as the time allows, both models at once).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="/root/site:/root/src"
# The round runs in ROUND, outside the work tree, which each device call re-syncs (a link or folder
# of ignored outputs there does not survive it).
ROUND=/root/round10
TOKENIZER=src/megadoc/models/mini/tokenizer.model
megadoc() { python3 -c 'from megadoc.cli import main; main()' "$@"; }

unpack() {  # every DIR/*.xz into ROUND/runs/data (token shards into runs/data/tokens), whole files only
  local data=$ROUND/runs/data
  mkdir -p $data/tokens $data/eval
  for f in "$1"/*.xz; do
    name=$(basename "$f" .xz)
    case "$name" in
      shard*) target=$data/tokens/$name ;;
      *.tar) target=$data/eval/$name ;;
      *) target=$data/$name ;;
    esac
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$f" "$target.part" && mv "$target.part" "$target"
    if [[ "$target" == *.tar ]]; then tar -xf "$target" -C $data/eval && rm "$target"; fi
  done
  ls -la $data $data/tokens
}

score() {  # score MODEL NAME: bits/byte and who-questions, JSON into runs/scores
  mkdir -p runs/scores
  megadoc eval ppl runs/data/eval/heldout/*.txt --context 1024,4096,16384,65536 --model "$1" --device cuda \
    --json > "runs/scores/ppl-$2.json"
  megadoc eval who --books runs/data/eval/books --model "$1" --device cuda --json > "runs/scores/who-$2.json"
  megadoc eval who --books runs/data/eval/books --model "$1" --device cuda --no-repeat-ngram 0 --json \
    > "runs/scores/who-$2-ngram0.json"
}

qmsum() {  # qmsum MODEL NAME: QMSum validation with recall, per-example rows (resumable)
  megadoc eval scrolls --task qmsum --data runs/data/eval/qmsum-val --model "$1" --device cuda \
    --out "runs/scores/qmsum-$2.jsonl" --json > "runs/scores/qmsum-$2.json"
}

run() {
  python3 -m megadoc.training.loop experiments/recipes/mini-pretrain10.toml > runs/pretrain10.out 2>&1
  until [ -f runs/data/tune-reading.npz ] && [ -f runs/data/tune-books.npz ]; do sleep 2; done
  python3 -m megadoc.training.loop experiments/recipes/mini-tune10.toml > runs/tune10.out 2>&1
  python3 -m megadoc.training.export runs/mini-tune10/checkpoint runs/mini-round10 $TOKENIZER
  mkdir -p runs/mini-round10/parts && split -b 15M runs/mini-round10/model.safetensors runs/mini-round10/parts/part-
  until [ -f /root/site/.ready ] && [ -d runs/data/eval/qmsum-val ]; do sleep 2; done
  mkdir -p runs/scores
  qmsum runs/mini-round10 round10 > runs/qmsum-round10.out 2>&1 &
  qmsum src/megadoc/models/mini round9 > runs/qmsum-round9.out 2>&1 &
  score runs/mini-round10 round10 > runs/score-round10.out 2>&1 || true
  score src/megadoc/models/mini round9 > runs/score-round9.out 2>&1 || true
  touch runs/scored
  wait
  touch runs/done
}

case "${1:-}" in
  start)
    rm -rf /root/src && cp -r .carry/src /root/src
    mkdir -p $ROUND/src/megadoc/models/mini && cp -r recipes experiments $ROUND/ && cp src/megadoc/models/mini/* $ROUND/src/megadoc/models/mini/
    unpack .carry/c1
    cp "$0" $ROUND/round10.sh
    (cd $ROUND && setsid nohup bash round10.sh run > runs/round10.log 2>&1 < /dev/null &)
    sleep 45
    tail -5 runs/pretrain10.out || true ;;
  install)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .whl/*.whl
    cp -r .carry/pysite/* /root/site/ && touch /root/site/.ready ;;
  unpack)
    unpack "$2"
    tail -3 $ROUND/runs/pretrain10.out $ROUND/runs/tune10.out 2>/dev/null || true ;;
  wait)
    out=$OUT && cd $ROUND
    deadline=$((SECONDS + $2))
    until [ -f runs/done ] || [ $SECONDS -ge $deadline ]; do sleep 5; done
    tail -3 runs/*.out || true
    mkdir -p "$out/scores" "$out/logs"
    cp runs/scores/* "$out/scores/" 2>/dev/null || true
    cp runs/mini-pretrain10/log.jsonl "$out/logs/pretrain10.jsonl" 2>/dev/null || true
    cp runs/mini-tune10/log.jsonl "$out/logs/tune10.jsonl" 2>/dev/null || true
    cp runs/round10.log runs/*.out "$out/logs/" 2>/dev/null || true
    tar -cf "$out/scores.tar" -C runs scores && tar -cf "$out/logs.tar" -C "$out" logs && rm -rf "$out/scores" "$out/logs"
    [ -d runs/mini-round10/parts ] && cp runs/mini-round10/parts/* runs/mini-round10/config.json "$out/" ;;
  run) run ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
