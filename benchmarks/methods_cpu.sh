#!/usr/bin/env bash
# I-JEPA / N-JEPA / MAE on CIFAR-10, one short equal budget, 2 seeds each, then every protocol.
#   benchmarks/methods_cpu.sh pretrain   # 6 runs of EPOCHS epochs (default 1) under runs/cmp/
#   benchmarks/methods_cpu.sh eval       # kNN, linear, 10 % / 1 % low-shot, fine-tune; baselines
#   benchmarks/methods_cpu.sh table      # the seed-grouped table (markdown)
# Resumable: a finished step is skipped; an interrupted run continues with --resume.
# Two CPU cores: DIRS / BASE_SEEDS / NO_PIXELS split the evaluation between two processes
# of one thread each (small models: more work done than one process with two threads).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PJEPA_DATA:?set PJEPA_DATA to the folder holding the dataset files (see docs/data.md)}"
PJEPA="${PJEPA:-.venv/bin/pjepa}"
OUT="${OUT:-runs/cmp}"
EPOCHS="${EPOCHS:-1}"
FT_EPOCHS="${FT_EPOCHS:-1}"
SEEDS="${SEEDS:-0 1}"
declare -A PRESET=([ijepa]=cifar10/cpu [njepa]=cifar10/njepa [mae]=cifar10/mae)

pretrain() {
  for seed in $SEEDS; do for m in ijepa njepa mae; do
    dir="$OUT/${m}_s$seed"
    [ -f "$dir/.pretrained" ] && continue
    if [ -d "$dir/checkpoints" ]; then "$PJEPA" train --resume "$dir"
    else "$PJEPA" train --config "${PRESET[$m]}" --out "$dir" train.epochs="$EPOCHS" train.time_limit_min=0 \
         train.seed="$seed" train.ckpt_every=100 train.progress=false; fi
    touch "$dir/.pretrained"
  done; done
}

evaluate() {  # linear first: it caches the features kNN and low-shot read
  for dir in ${DIRS:-"$OUT"/*_s*}; do
    [ -f "$dir/eval/linear.json" ] || "$PJEPA" eval linear --run "$dir"
    [ -f "$dir/eval/knn.json" ] || "$PJEPA" eval knn --run "$dir"
    [ -f "$dir/eval/lowshot.json" ] || "$PJEPA" eval lowshot --run "$dir"
    [ -f "$dir/eval/finetune.json" ] || "$PJEPA" eval finetune --run "$dir" --epochs "$FT_EPOCHS"
  done
  for seed in ${BASE_SEEDS:-$SEEDS}; do  # baselines on the I-JEPA runs' data and seeds (untrained: one per seed)
    dir="$OUT/ijepa_s$seed"
    for p in linear knn lowshot; do
      [ -f "$dir/eval/${p}_random_init.json" ] || "$PJEPA" eval $p --run "$dir" --random-init
    done
    [ -f "$dir/eval/finetune_random_init.json" ] || "$PJEPA" eval finetune --run "$dir" --random-init --epochs "$FT_EPOCHS"
  done
  [ -n "${NO_PIXELS:-}" ] && return
  dir="$OUT/ijepa_s${SEEDS%% *}"  # raw pixels do not depend on the seed: once
  for p in knn linear lowshot; do
    [ -f "$dir/eval/${p}_pixels.json" ] || "$PJEPA" eval $p --run "$dir" --pixels
  done
}

case "${1:-all}" in
  pretrain) pretrain ;;
  eval) evaluate ;;
  table) "$PJEPA" table "$OUT"/*_s* --format md ;;
  all) pretrain; evaluate; "$PJEPA" table "$OUT"/*_s* --format md ;;
esac
