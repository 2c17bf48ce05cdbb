#!/usr/bin/env bash
# The CIFAR-10 CPU head table (issue 12): every head preset at equal epochs (7), seeds 0,1,2,
# kNN@1 and the linear probe, untrained-encoder and raw-pixel baselines, one sweep per head.
#   bash benchmarks/cifar10_heads_sweep.sh [ROOT] [extra overrides...]
# Resumable: rerun the same command after an interruption. Finished runs whose weights were
# dropped (benchmarks/results/cifar10-heads, copied into ROOT first) are not trained again.
# Table: pjepa table ROOT/*
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/sweeps/cifar10-heads}
shift || true
export PJEPA_DATA=${PJEPA_DATA:-../shared/data}
HEADS=${HEADS:-"cpu mdn autoregressive flow flow_matching diffusion"}
if [ -d benchmarks/results/cifar10-heads ] && [ ! -d "$ROOT" ]; then
  mkdir -p "$(dirname "$ROOT")" && cp -r benchmarks/results/cifar10-heads "$ROOT"
fi
for head in $HEADS; do
  .venv/bin/pjepa sweep --config "cifar10/$head" --out "$ROOT/$head" --eval knn,linear --baselines \
    train.seed=0,1,2 train.time_limit_min=0 train.progress=false "$@"
done
.venv/bin/pjepa table "$ROOT"/* --format md
