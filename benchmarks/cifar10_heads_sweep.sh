#!/usr/bin/env bash
# The CIFAR-10 CPU head table: every head preset at equal epochs, seeds 0,1,2, kNN@1 (and on the
# validation split) and the linear probe, untrained-encoder and raw-pixel baselines, one sweep per head.
#   bash benchmarks/cifar10_heads_sweep.sh [ROOT] [extra overrides...]      # HEADS="mdn flow" for a subset
# Resumable: rerun the same command after an interruption. DRY_RUN=1 checks the configs and prints the grids.
# The untrained-encoder and raw-pixel baselines (kNN and linear, ~14 min a run on one core) are the same
# for every head of one seed (same data, ViT and seed; pjepa table counts them once per seed), so only
# the sweep of BASELINES_HEAD (default: the first of HEADS) rates them.
#
# The table is kept as a per-run CSV: benchmarks/results/cifar10_heads.csv (pjepa table FILE.csv groups it).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PJEPA_DATA:?set PJEPA_DATA to the folder holding cifar10_jpeg.npz (see docs/data.md)}"
ROOT=${1:-runs/sweeps/cifar10-heads}
EVALS=knn_val,knn,linear
HEADS=${HEADS:-"cpu mdn autoregressive flow flow_matching diffusion"}
shift || true
BASELINES_HEAD=${BASELINES_HEAD:-${HEADS%% *}}
for head in $HEADS; do
  BASELINES=()
  [ "$head" = "$BASELINES_HEAD" ] && BASELINES=(--baselines)
  .venv/bin/pjepa sweep --config "cifar10/$head" --out "$ROOT/$head" --eval "$EVALS" ${BASELINES[@]+"${BASELINES[@]}"} \
    ${DRY_RUN:+--dry-run} train.seed=0,1,2 train.time_limit_min=0 train.progress=false "$@"
done
[ -n "${DRY_RUN:-}" ] || .venv/bin/pjepa table "$ROOT"/* --format md --per-run --csv "${KEEP:-$ROOT/table.csv}"
