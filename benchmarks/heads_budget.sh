#!/usr/bin/env bash
# The head table at equal compute: every head on one base recipe, each trained for the steps that fit the
# same budget at its own measured step cost (a budgets file written by benchmarks/measure_budget.py on 2
# quiet cores), 3 seeds, kNN@1 (validation and reported split, raw and PCA-whitened features: whitened pixels are
# the strongest pixel baseline, so the encoder is rated the same way), the linear probe and the calibration protocol.
#   python benchmarks/measure_budget.py --minutes 20 --out benchmarks/budgets/cifar10_heads.csv \
#       deterministic=cifar10/cpu mdn=cifar10/mdn autoregressive=cifar10/autoregressive flow=cifar10/flow \
#       flow_matching=cifar10/flow_matching diffusion=cifar10/diffusion -- BASE_OVERRIDES
#   bash benchmarks/heads_budget.sh [ROOT] [BASE_OVERRIDES...]    # CIFAR-10; HEADS="mdn flow" for a subset
#   BUDGETS=benchmarks/budgets/tin100_heads.csv bash benchmarks/heads_budget.sh runs/tin100-heads   # Tiny ImageNet-100
# Give the same BASE_OVERRIDES to both (the base recipe's regulariser, target, mask sets). Resumable.
# One lane per seed on one thread each: SEEDS=0 ... train.num_threads=1 in one shell, SEEDS=1 in another; a
# one-seed lane keeps its sweeps in ROOT/HEAD/seedN (a sweep folder holds one sweep), and the table reads them all.
# The runs of the head named by BASELINES (default deterministic; none: no head) also rate the untrained
# encoder and raw pixels: those do not depend on the head (a seed fixes the split and the untrained weights).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PJEPA_DATA:?set PJEPA_DATA to the folder holding the datasets npz files (see docs/data.md)}"
BUDGETS=${BUDGETS:-benchmarks/budgets/cifar10_heads.csv}
ROOT=${1:-runs/sweeps/$(basename "$BUDGETS" .csv)-budget}
shift || true
HEADS=${HEADS:-"deterministic mdn autoregressive flow flow_matching diffusion"}
BASELINES=${BASELINES:-deterministic}
PJEPA=${PJEPA:-.venv/bin/pjepa}
SEEDS=${SEEDS:-0,1,2}
lane=""; [[ "$SEEDS" == *,* ]] || lane="/seed$SEEDS"
steps_of() { awk -F, -v n="$1" 'NR > 1 && $1 == n { print $9 }' "$BUDGETS"; }
config_of() { awk -F, -v n="$1" 'NR > 1 && $1 == n { print $2 }' "$BUDGETS"; }
rows_of() { awk -F, 'NR > 1 { printf "%s%s", s, $1; s = ", " }' "$BUDGETS"; }
[ "$BASELINES" = none ] || [ -n "$(steps_of "$BASELINES")" ] || { echo "BASELINES=$BASELINES: not a row of $BUDGETS (its rows: $(rows_of)); name the head whose runs rate the baselines, or none" >&2; exit 2; }
for head in $HEADS; do
  steps=$(steps_of "$head"); config=$(config_of "$head")
  [ -n "$steps" ] || { echo "no budget for $head in $BUDGETS (its rows: $(rows_of)); name one of them in HEADS, or measure $head with benchmarks/measure_budget.py" >&2; exit 2; }
  BASELINE_FLAG=()
  [ "$head" = "$BASELINES" ] && BASELINE_FLAG=(--baselines)
  $PJEPA sweep --config "$config" --out "$ROOT/$head$lane" --eval knn_val,knn,knn_val_white,knn_white,linear,calibration \
    ${BASELINE_FLAG[@]+"${BASELINE_FLAG[@]}"} ${DRY_RUN:+--dry-run} train.seed="$SEEDS" train.max_steps="$steps" \
    train.time_limit_min=0 train.progress=false "$@"
done
sweeps=("$ROOT"/*/); [ -n "$lane" ] && sweeps=("$ROOT"/*/seed*/)  # folders only: ROOT may hold the table CSV and lane logs
[ -n "${DRY_RUN:-}" ] || $PJEPA table "${sweeps[@]}" --format md --per-run --csv "${KEEP:-$ROOT/table.csv}"
