#!/usr/bin/env bash
# The CIFAR-10 CPU head table (issue 12): every head preset at equal epochs, seeds 0,1,2, kNN@1 (and on the
# validation split) and the linear probe, untrained-encoder and raw-pixel baselines, one sweep per head.
#   bash benchmarks/cifar10_heads_sweep.sh [ROOT] [extra overrides...]      # HEADS="mdn flow" for a subset
# Resumable: rerun the same command after an interruption. DRY_RUN=1 checks the configs and prints the grids.
# The untrained-encoder and raw-pixel baselines (kNN and linear, ~14 min a run on one core) are the same
# for every head of one seed (same data, ViT and seed; pjepa table counts them once per seed), so only
# the sweep of BASELINES_HEAD (default: the first of HEADS) rates them.
#
# RECIPE=current (the default): the presets as they are (configs/cifar10/cpu.yaml: context VICReg, 10
# epochs, precision auto), into runs/sweeps/cifar10-heads-current. Its deterministic row is the preset's
# three seeds already run (benchmarks/results/cifar10-vicreg{,-s1,-s2}; HEADS=cpu trains them again).
# RECIPE=old: the recipe before 2026-12-03 (no VICReg terms, 7 epochs, fp32), into runs/sweeps/cifar10-heads,
# continuing the runs kept in benchmarks/results/cifar10-heads (copied into ROOT first).
set -euo pipefail
cd "$(dirname "$0")/.."
export PJEPA_DATA=${PJEPA_DATA:-../shared/data}
case ${RECIPE:-current} in
  current)
    ROOT=${1:-runs/sweeps/cifar10-heads-current}
    RECIPE_OVERRIDES=()
    EVALS=knn_val,knn,linear
    HEADS=${HEADS:-"mdn autoregressive flow flow_matching diffusion"}
    KEPT=(benchmarks/results/cifar10-vicreg/cpu benchmarks/results/cifar10-vicreg-s1/cpu_seed1
          benchmarks/results/cifar10-vicreg-s2/cpu) ;;
  old)
    ROOT=${1:-runs/sweeps/cifar10-heads}
    RECIPE_OVERRIDES=("method.options={}" train.epochs=7 train.precision=fp32)
    EVALS=knn,linear  # as those runs were swept: the sweep's plan must match to continue it
    HEADS=${HEADS:-"cpu mdn autoregressive flow flow_matching diffusion"}
    KEPT=()
    if [ -d benchmarks/results/cifar10-heads ] && [ ! -d "$ROOT" ]; then
      mkdir -p "$(dirname "$ROOT")" && cp -r benchmarks/results/cifar10-heads "$ROOT"
    fi ;;
  *) echo "RECIPE=${RECIPE}: choose current or old" >&2; exit 2 ;;
esac
shift || true
BASELINES_HEAD=${BASELINES_HEAD:-${HEADS%% *}}
for head in $HEADS; do
  BASELINES=()
  [ "$head" = "$BASELINES_HEAD" ] && BASELINES=(--baselines)
  .venv/bin/pjepa sweep --config "cifar10/$head" --out "$ROOT/$head" --eval "$EVALS" ${BASELINES[@]+"${BASELINES[@]}"} \
    ${DRY_RUN:+--dry-run} train.seed=0,1,2 train.time_limit_min=0 train.progress=false \
    ${RECIPE_OVERRIDES[@]+"${RECIPE_OVERRIDES[@]}"} "$@"
done
[ -n "${DRY_RUN:-}" ] || .venv/bin/pjepa table ${KEPT[@]+"${KEPT[@]}"} "$ROOT"/* --format md
