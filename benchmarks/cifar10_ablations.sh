#!/usr/bin/env bash
# The recipe ablations on CIFAR-10 (configs/cifar10/ablations/): every row 2 seeds at the
# short budget (3 epochs), kNN@1 on the validation split (what a choice reads) and on the test split.
#   bash benchmarks/cifar10_ablations.sh [ROOT] [extra overrides...]
#   ROWS="base ema_official" bash benchmarks/cifar10_ablations.sh    # a subset of rows
# Resumable: rerun the same command after an interruption. Kept as benchmarks/results/cifar10_recipe_ablations.csv.
# Table: pjepa table ROOT/* --by knn_val --pairs   (choose by knn_val; report knn)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/sweeps/cifar10-ablations}
shift || true
: "${PJEPA_DATA:?set PJEPA_DATA to the folder holding cifar10_jpeg.npz (see docs/data.md)}"
ALL="base ema_official init_official size_official no_equalise per_block official predictor_deep predictor_wide
     no_target_norm head_vicreg context_vicreg diffusion_v diffusion_eps"
ROWS=${ROWS:-$ALL}
for row in $ROWS; do
  .venv/bin/pjepa sweep --config "cifar10/ablations/$row" --out "$ROOT/$row" --eval knn_val,knn \
    train.seed=0,1 train.progress=false "$@"
done
.venv/bin/pjepa table "$ROOT"/* --format md --by knn_val --per-run --csv "${KEEP:-$ROOT/table.csv}"
