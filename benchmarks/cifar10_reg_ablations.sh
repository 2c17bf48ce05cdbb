#!/usr/bin/env bash
# The regulariser ablation on CIFAR-10 at a fixed compute budget, chosen on the validation split.
# Each row (configs/cifar10/reg_ablations/ROW.yaml) trains its own measured step count, then is rated
# by kNN on the validation split (eval/knn_val.json). Resumable: a finished run is skipped, a killed
# one continues from its checkpoint.
#   bash benchmarks/cifar10_reg_ablations.sh OUT SEED [ROW ...] [-- key=value ...]
# One lane per seed on one thread each: OMP_NUM_THREADS=1 ... train.num_threads=1.
# Table: pjepa table OUT/*/seed* --by knn_val --format md
set -euo pipefail
OUT=$1; SEED=$2; shift 2
ROWS=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do ROWS+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#ROWS[@]} -gt 0 ] || ROWS=(vicreg_token vicreg_image sigreg sigreg_online sigreg_sets2)
PJEPA=${PJEPA:-pjepa}
for row in "${ROWS[@]}"; do
  run="$OUT/$row/seed$SEED"
  if [ -f "$run/eval/knn_val.json" ]; then echo "[ablation] $run: done, skipped"; continue; fi
  if [ -d "$run/checkpoints/last" ]; then  # killed (or trained, not yet rated): continue it
    $PJEPA train --resume "$run" "$@"
  else
    $PJEPA train --config "configs/cifar10/reg_ablations/$row.yaml" --out "$run" --force \
      train.seed="$SEED" train.progress=false "$@"
  fi
  $PJEPA eval knn --run "$run" --split val
done
