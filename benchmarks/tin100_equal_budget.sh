#!/usr/bin/env bash
# The Tiny ImageNet-100 equal-budget head comparison (GPU): every head trains
# configs/tin100/equal_budget/<head>.yaml (same epochs, global batch 256, schedule)
# at each learning rate of a small search; each run then gets the full kNN@1 protocol
# (train split bank, val split queries) and the shared head metrics, and one table
# lists every run with both votes and its budget. Pick each head's best lr from the
# table (validation kNN is the selection metric of this protocol: say so when reporting).
#   bash benchmarks/tin100_equal_budget.sh [OUT_DIR] [key=value ...]
#   HEADS="mdn diffusion" LRS="3e-4" bash benchmarks/tin100_equal_budget.sh runs/tin100-eq train.epochs=10
set -euo pipefail
cd "$(dirname "$0")/.."
export PJEPA_DATA=${PJEPA_DATA:-$(cd .. && pwd)/shared/data}   # where the presets find their data files
OUT=${1:-runs/tin100-equal-budget}; shift || true
HEADS=${HEADS:-"deterministic mdn autoregressive flow flow_matching diffusion"}
LRS=${LRS:-"1e-4 3e-4 1e-3"}
PJ=${PJ:-".venv/bin/pjepa"}
runs=()
for head in $HEADS; do
  for lr in $LRS; do
    run="$OUT/$head-lr$lr"
    if [ ! -f "$run/eval/knn.json" ]; then  # re-running the script continues where it stopped
      if [ -d "$run/checkpoints" ]; then $PJ train --resume "$run"; else
        $PJ train --config "configs/tin100/equal_budget/$head.yaml" --out "$run" "optim.lr=$lr" "$@"; fi
      $PJ eval knn --run "$run"
      $PJ eval head --run "$run"
    fi
    runs+=("$run")
  done
done
[ -f "${runs[0]}/eval/knn_random_init.json" ] || $PJ eval knn --run "${runs[0]}" --random-init
[ -f "${runs[0]}/eval/knn_pixels.json" ] || $PJ eval knn --run "${runs[0]}" --pixels
$PJ table "${runs[@]}" --csv "$OUT/table.csv"
