#!/usr/bin/env bash
# Round 11 of `mini` and the evaluation tables on one GPU, across back-to-back device calls that each
# carry part of the data (a call carries at most 64 MiB, the repository included):
#
#   round11.sh start        call 1: the package (with the shipped weights) outside the work tree, the
#                           shards and rows of .carry/c1, and the round started in the background (setsid)
#   round11.sh unpack DIR   later calls: DIR's *.xz (token shards, tuning rows, eval.tar), DIR/whl/*.whl
#                           (the app's packages the GPU image lacks), DIR/gguf.* (SmolLM2's file in parts;
#                           the last part's call checks it and starts SmolLM2's runs)
#   round11.sh wait SECONDS [weights]
#                           wait for the end (or SECONDS; with `weights`, only until the new weights are
#                           exported); scores, logs and the new weights to $OUT
#
# The round (`round11.sh run`): tuning from the shipped weights once the rows have come
# (mini-tune11.toml; token shards join its draw as they land), the export, then round 11 and round 9
# scored side by side on the same GPU (`paired`: the who-questions with and without name answers,
# QMSum, FairytaleQA test's character questions, held-out bits/byte). `tables` (every long-document
# task in both reading modes) and `smollm2` run only when called.
# Every eval run writes per-example rows (--out): paired intervals come from `megadoc eval compare`.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="/root/site:/root/src"
ROUND=/root/round11  # outside the work tree, which each device call re-syncs
EVAL=$ROUND/runs/data/eval
TOKENIZER=src/megadoc/models/mini/tokenizer.model
TASKS="narrativeqa qasper qmsum squality fairytaleqa"
megadoc() { python3 -c 'from megadoc.cli import main; main()' "$@"; }
detached() { (cd $ROUND && setsid nohup bash round11.sh "$@" > /dev/null 2>&1 < /dev/null &); }

data_of() {  # the --data argument of each task
  case "$1" in
    narrativeqa) echo $EVAL/fullstory_valid.jsonl.gz ;;
    qasper) echo $EVAL/scientific_qa.jsonl ;;
    qmsum) echo $EVAL/qmsum-val ;;
    squality) echo $EVAL/v1-3_txt_dev.jsonl.gz ;;
    fairytaleqa) echo $EVAL/fairytaleqa_by_split.tar.gz ;;
  esac
}

scrolls() {  # scrolls TASK NAME ARGS...: one run, per-example rows in runs/scores/TASK-NAME.jsonl
  local task=$1 name=$2 && shift 2
  OMP_NUM_THREADS=1 megadoc eval scrolls --task "$task" --data "$(data_of "$task")" --device cuda --json \
    --out "runs/scores/$task-$name.jsonl" "$@" > "runs/scores/$task-$name.json" 2> "runs/scores/$task-$name.err" || true
}

tables() {  # tables MODEL NAME: every task in both reading modes (NarrativeQA's first 120: each question
  # reads its whole book again; QMSum with recall is `paired`'s), then `paired`
  local model=$1 name=$2
  for task in $TASKS; do
    local limit=() && [ "$task" = narrativeqa ] && limit=(--limit 120)
    [ "$task" = qmsum ] || scrolls "$task" "$name-recall" --model "$model" --recall "${limit[@]}" &
    scrolls "$task" "$name-plain" --model "$model" --no-recall "${limit[@]}" &
  done
  paired "$model" "$name"
}

paired() {  # paired MODEL NAME: what a new round is compared on, beside the shipped model
  local model=$1 name=$2
  scrolls qmsum "$name-recall" --model "$model" --recall &
  scrolls fairytaleqa "$name-test-character" --model "$model" --recall --split test --attribute character &
  OMP_NUM_THREADS=1 megadoc eval who --books $EVAL/books --model "$model" --device cuda --json \
    > "runs/scores/who-$name.json" 2> "runs/scores/who-$name.err" || true
  OMP_NUM_THREADS=1 megadoc eval who --books $EVAL/books --model "$model" --device cuda --no-names --json \
    > "runs/scores/who-$name-written.json" 2>> "runs/scores/who-$name.err" || true
  OMP_NUM_THREADS=1 megadoc eval ppl $EVAL/heldout/*.txt --context 1024,4096,16384,65536 --model "$model" --device cuda \
    --json > "runs/scores/ppl-$name.json" 2> "runs/scores/ppl-$name.err" || true
  wait
  touch "runs/scores/.$name-done"
}

smollm2() {  # every task and the who-questions with SmolLM2-135M-Instruct, the document's head and recall
  local smol=(--engine hf --model $ROUND/SmolLM2-135M-Instruct.Q4_1.gguf)
  for task in $TASKS; do
    scrolls "$task" smollm2-head "${smol[@]}" --context head &
    scrolls "$task" smollm2-recall "${smol[@]}" --recall &
  done
  OMP_NUM_THREADS=1 megadoc eval who --books $EVAL/books "${smol[@]}" --device cuda --json \
    > runs/scores/who-smollm2-head.json 2> runs/scores/who-smollm2.err || true
  OMP_NUM_THREADS=1 megadoc eval who --books $EVAL/books "${smol[@]}" --recall --device cuda --json \
    > runs/scores/who-smollm2-recall.json 2>> runs/scores/who-smollm2.err || true
  wait
  touch runs/scores/.smollm2-done
}

run() {
  until [ -f runs/data/tune-reading.npz ] && [ -f runs/data/tune-books.npz ]; do sleep 2; done
  python3 -m megadoc.training.loop experiments/recipes/mini-tune11.toml > runs/tune11.out 2>&1
  python3 -m megadoc.training.export runs/mini-tune11/checkpoint runs/mini-round11 $TOKENIZER
  mkdir -p runs/mini-round11/parts && split -b 15M runs/mini-round11/model.safetensors runs/mini-round11/parts/part-
  touch runs/exported
  until [ -f /root/site/.ready ] && [ -f $EVAL/.ready ]; do sleep 2; done
  paired runs/mini-round11 round11 &
  paired src/megadoc/models/mini round9
  wait
  touch runs/done
}

unpack() {  # unpack DIR: whole files only (each lands under a temporary name, then is renamed)
  local data=$ROUND/runs/data
  mkdir -p $data/tokens $EVAL $ROUND/runs/scores
  for f in "$1"/*.xz; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .xz)
    case "$name" in
      shard*) target=$data/tokens/$name ;;
      *) target=$data/$name ;;
    esac
    xz -dc "$f" > "$target.part" && mv "$target.part" "$target"
    if [ "$name" = eval.tar ]; then tar -xf "$target" -C $EVAL && rm "$target" && touch $EVAL/.ready; fi
  done
  if [ -d "$1/whl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site "$1"/whl/*.whl
    touch /root/site/.ready
  fi
  if compgen -G "$1/gguf.*" > /dev/null; then
    cp "$1"/gguf.part* $ROUND/ 2>/dev/null || true
    if [ -f "$1/gguf.sha" ]; then
      cat $ROUND/gguf.part* | xz -dc > $ROUND/SmolLM2-135M-Instruct.Q4_1.gguf && rm $ROUND/gguf.part*
      echo "$(cat "$1/gguf.sha")  $ROUND/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
      detached smollm2
    fi
  fi
  ls -la $data $data/tokens
  tail -n 2 $ROUND/runs/*.out 2>/dev/null || true
}

case "${1:-}" in
  start)
    rm -rf /root/src $ROUND && mkdir -p $ROUND/runs && cp -r src /root/src && cp -r src recipes experiments "$0" $ROUND/
    unpack .carry/c1
    (cd $ROUND && setsid nohup bash round11.sh run > runs/round11.log 2>&1 < /dev/null &)
    sleep 5 && ls $ROUND/runs ;;
  unpack) unpack "$2" ;;
  wait)
    out=$OUT && cd $ROUND
    deadline=$((SECONDS + $2))
    finished() { [ -f runs/done ] || { [ "${3:-}" = weights ] && [ -f runs/exported ]; }; }
    until finished "$@" || [ $SECONDS -ge "$deadline" ]; do sleep 5; done
    tail -n 2 runs/*.out runs/scores/*.err 2>/dev/null | tr '\r' '\n' | grep -v '^$' | tail -n 80 || true
    mkdir -p logs && cp runs/mini-tune11/log.jsonl logs/tune11.jsonl 2>/dev/null || true
    cp runs/round11.log runs/*.out logs/ 2>/dev/null || true
    tar -cJf "$out/scores.tar.xz" runs/scores logs
    if [ -d runs/mini-round11/parts ]; then cp runs/mini-round11/parts/* runs/mini-round11/config.json "$out/"; fi ;;
  run | tables | paired | smollm2) "$@" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
