#!/usr/bin/env bash
# The CIFAR-10 CPU head table (issue 12): every head preset at equal epochs (7), seeds 0,1,2,
# kNN@1 and the linear probe, untrained-encoder and raw-pixel baselines, one sweep per head.
#   bash benchmarks/cifar10_heads_sweep.sh [ROOT] [extra overrides...]
# Resumable: rerun the same command after an interruption. Finished runs whose weights were
# dropped (benchmarks/results/cifar10-heads, copied into ROOT first) are not trained again.
# Table: pjepa table ROOT/*
# RECIPE: the runs in benchmarks/results/cifar10-heads used the CPU recipe before 2026-12-03 (no
# VICReg terms, 7 epochs, fp32 as auto resolved then); RECIPE=old (the default while that table is
# being completed) reproduces it, RECIPE=current trains the presets as they are now (use a new ROOT).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/sweeps/cifar10-heads}
shift || true
export PJEPA_DATA=${PJEPA_DATA:-../shared/data}
case ${RECIPE:-old} in
  old) RECIPE_OVERRIDES=("method.options={}" train.epochs=7 train.precision=fp32) ;;
  current) RECIPE_OVERRIDES=() ;;
  *) echo "RECIPE=${RECIPE}: choose old or current" >&2; exit 2 ;;
esac
HEADS=${HEADS:-"cpu mdn autoregressive flow flow_matching diffusion"}
if [ "${RECIPE:-old}" = old ] && [ -d benchmarks/results/cifar10-heads ] && [ ! -d "$ROOT" ]; then
  mkdir -p "$(dirname "$ROOT")" && cp -r benchmarks/results/cifar10-heads "$ROOT"
fi
for head in $HEADS; do
  .venv/bin/pjepa sweep --config "cifar10/$head" --out "$ROOT/$head" --eval knn,linear --baselines \
    train.seed=0,1,2 train.time_limit_min=0 train.progress=false "${RECIPE_OVERRIDES[@]}" "$@"
done
.venv/bin/pjepa table "$ROOT"/* --format md
