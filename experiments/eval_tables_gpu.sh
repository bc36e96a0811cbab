#!/usr/bin/env bash
# RESULTS.md's tables on one GPU (issue #23): every long-document task on its whole validation
# set, mini (recall / plain) and SmolLM2-135M-Instruct (head / recall) on the same examples,
# across back-to-back device calls (a call carries at most 64 MiB, the repository included, and
# the GGUF file alone is 94 MiB):
#
#   eval_tables_gpu.sh start         call 1: install .whl, unpack .carry/data (the GGUF file's first
#                                    part in data/g0), copy the package (mini's weights with it)
#                                    outside the work tree and start mini's runs in the background
#   eval_tables_gpu.sh part DIR      calls 2-4: one more part of the GGUF file; the last (DIR holds
#                                    gguf.sha) checks the joined file and starts SmolLM2's runs
#   eval_tables_gpu.sh wait SECONDS  wait for every run's end (or SECONDS), rows and summaries to $OUT
#
# Each run is `megadoc eval scrolls` (or `eval who`) with --out, so a run cut short resumes.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="/root/site:/root/src" OMP_NUM_THREADS=1
ROOT=/root/evals
DATA=$ROOT/data
megadoc() { python3 -c 'from megadoc.cli import main; main()' "$@"; }

data_of() {  # the --data argument of each task
  case "$1" in
    narrativeqa) echo $DATA/fullstory_valid.jsonl.gz ;;
    qasper) echo $DATA/scientific_qa.jsonl ;;
    qmsum) echo $DATA/val ;;
    squality) echo $DATA/v1-3_txt_dev.jsonl.gz ;;
    fairytaleqa) echo $DATA/fairytaleqa_by_split.tar.gz ;;
  esac
}

scrolls() {  # scrolls TASK NAME ARGS...: one task's run, rows in runs/TASK-NAME.jsonl
  local task=$1 name=$2 && shift 2
  megadoc eval scrolls --task "$task" --data "$(data_of "$task")" --device cuda \
    --out "$ROOT/runs/$task-$name.jsonl" --json "$@" > "$ROOT/runs/$task-$name.json" 2> "$ROOT/runs/$task-$name.err"
}

who() {  # who NAME ARGS...
  local name=$1 && shift
  megadoc eval who --books $DATA/books --device cuda --json "$@" > "$ROOT/runs/who-$name.json" 2> "$ROOT/runs/who-$name.err"
}

in_background() {  # in_background FUNCTION ARGS...: a run that outlives this device call
  (setsid nohup bash "$ROOT/eval_tables_gpu.sh" "$@" > /dev/null 2>&1 < /dev/null &)
}

TASKS="narrativeqa qasper qmsum squality fairytaleqa"
case "${1:-}" in
  start)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .whl/*.whl
    rm -rf /root/src $ROOT && mkdir -p $DATA $ROOT/runs && cp -r src /root/src && cp "$0" $ROOT/
    cp -r .carry/data/* $DATA/
    mv $DATA/g0/part0 $ROOT/ && xz -d $DATA/scientific_qa.jsonl.xz && tar -xJf $DATA/qmsum-val.tar.xz -C $DATA
    for task in $TASKS; do
      in_background scrolls "$task" mini-recall
      in_background scrolls "$task" mini-plain --no-recall
    done
    in_background who mini
    sleep 20 && tail -n 2 $ROOT/runs/*.err ;;
  part)
    cp "$2"/part* $ROOT/
    if [ -f "$2/gguf.sha" ]; then
      cat $ROOT/part? > $ROOT/SmolLM2-135M-Instruct.Q4_1.gguf && rm $ROOT/part?
      echo "$(cat "$2/gguf.sha")  $ROOT/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
      smol=(--engine hf --model $ROOT/SmolLM2-135M-Instruct.Q4_1.gguf)
      for task in $TASKS; do
        in_background scrolls "$task" smollm2-head "${smol[@]}" --context head
        in_background scrolls "$task" smollm2-recall "${smol[@]}" --recall
      done
      in_background who smollm2-head "${smol[@]}"
      in_background who smollm2-recall "${smol[@]}" --recall
    fi
    ls -la $ROOT ;;
  wait)
    deadline=$((SECONDS + $2))
    while pgrep -f "megadoc.cli import main" > /dev/null && [ $SECONDS -lt $deadline ]; do sleep 5; done
    pgrep -fa "megadoc.cli import main" | cut -c1-160 || true
    tail -n 1 $ROOT/runs/*.err | tr '\r' '\n' | grep -v '^$' | tail -n 60
    wc -l $ROOT/runs/*.jsonl
    tar -cJf "$OUT/runs.tar.xz" -C $ROOT runs ;;
  scrolls | who) "$@" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
