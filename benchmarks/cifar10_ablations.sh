#!/usr/bin/env bash
# The recipe ablations of issue 13 on CIFAR-10 (configs/cifar10/ablations/): every row 2 seeds at the
# short budget (3 epochs), kNN@1 on the validation split (what a choice reads) and on the test split.
#   bash benchmarks/cifar10_ablations.sh [ROOT] [extra overrides...]
#   ROWS="base ema_official" bash benchmarks/cifar10_ablations.sh    # a subset of rows
# Resumable: rerun the same command after an interruption. Finished runs whose weights were
# dropped (benchmarks/results/cifar10-ablations, copied into ROOT first) are not trained again.
# Table: pjepa table ROOT/* --by knn_val --pairs   (choose by knn_val; report knn)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/sweeps/cifar10-ablations}
shift || true
export PJEPA_DATA=${PJEPA_DATA:-../shared/data}
ALL="base ema_official init_official size_official no_equalise per_block official predictor_deep predictor_wide
     no_target_norm head_vicreg context_vicreg diffusion_v diffusion_eps"
ROWS=${ROWS:-$ALL}
if [ -d benchmarks/results/cifar10-ablations ] && [ ! -d "$ROOT" ]; then
  mkdir -p "$(dirname "$ROOT")" && cp -r benchmarks/results/cifar10-ablations "$ROOT"
fi
for row in $ROWS; do
  .venv/bin/pjepa sweep --config "cifar10/ablations/$row" --out "$ROOT/$row" --eval knn_val,knn \
    train.seed=0,1 train.progress=false "$@"
done
.venv/bin/pjepa table "$ROOT"/* --format md --by knn_val
