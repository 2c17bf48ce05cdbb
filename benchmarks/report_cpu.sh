#!/usr/bin/env bash
# The HTML report over CIFAR-10 CPU runs: the deterministic head, two probabilistic heads
# (MDN, diffusion) and MAE, each trained EPOCHS epochs, evaluated, then one report.
#   benchmarks/report_cpu.sh pretrain   # runs under runs/report/ (resumable)
#   benchmarks/report_cpu.sh eval       # linear probe (saves predictions), calibration, head metrics
#   benchmarks/report_cpu.sh report     # runs/report/html/index.html
# THREADS (default 1) threads per process: the rest of the machine stays free.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PJEPA_DATA:?set PJEPA_DATA to the folder holding the dataset files (see docs/data.md)}"
PJEPA="${PJEPA:-.venv/bin/pjepa}"
OUT="${OUT:-runs/report}"
EPOCHS="${EPOCHS:-1}"
THREADS="${THREADS:-1}"
RUNS="${RUNS:-deterministic mdn diffusion mae}"
declare -A PRESET=([deterministic]=cifar10/cpu [mdn]=cifar10/mdn [diffusion]=cifar10/diffusion
                   [flow]=cifar10/flow [mae]=cifar10/mae [njepa]=cifar10/njepa)

pretrain() {  # RUNS="a b" benchmarks/report_cpu.sh pretrain & RUNS="c d" ...: two processes
  for r in $RUNS; do
    dir="$OUT/$r"
    [ -f "$dir/.pretrained" ] && continue
    if [ -d "$dir/checkpoints" ]; then "$PJEPA" train --resume "$dir"
    else "$PJEPA" train --config "${PRESET[$r]}" --out "$dir" train.epochs="$EPOCHS" train.time_limit_min=0 \
         train.num_threads="$THREADS" train.eval_every=100 train.ckpt_every=100 train.progress=false; fi
    touch "$dir/.pretrained"
  done
}

evaluate() {
  export OMP_NUM_THREADS="$THREADS"
  for r in $RUNS; do
    dir="$OUT/$r"
    [ -f "$dir/eval/linear.json" ] || "$PJEPA" eval linear --run "$dir"
    [ "$r" = mae ] && continue
    [ -f "$dir/eval/calibration.json" ] || "$PJEPA" eval calibration --run "$dir"
  done
}

case "${1:-all}" in
  pretrain) pretrain ;;
  eval) evaluate ;;
  report) "$PJEPA" report $(for r in $RUNS; do echo "$OUT/$r"; done) --out "$OUT/html" ;;
  all) pretrain; evaluate; "$PJEPA" report $(for r in $RUNS; do echo "$OUT/$r"; done) --out "$OUT/html" ;;
esac
