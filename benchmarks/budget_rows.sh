#!/usr/bin/env bash
# The rows of a fixed-compute ablation, each trained for its own measured step count, then rated by kNN on
# the validation split (the split every choice is made on). The budgets file is what
# benchmarks/measure_budget.py wrote on 2 quiet cores (name, config, overrides, processor, ..., steps):
#   python benchmarks/measure_budget.py --minutes 10 --out benchmarks/budgets/cifar10_levers.csv \
#       vicreg_token=cifar10/reg_ablations/vicreg_token lr4e-3=cifar10/reg_ablations/vicreg_token:optim.lr=4e-3
#   bash benchmarks/budget_rows.sh benchmarks/budgets/cifar10_levers.csv runs/levers 0 [ROW ...] [-- key=value ...]
#   pjepa table runs/levers/*/seed* --by knn_val --format md
# Resumable: a rated run is skipped, a killed one continues from its checkpoint (--auto-resume). One lane per
# seed on one thread each (the step count, not the wall time, is the budget, so lanes stay comparable):
#   OMP_NUM_THREADS=1 bash benchmarks/budget_rows.sh BUDGETS OUT 0 -- train.num_threads=1   # and seed 1 beside it
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGETS=$1; OUT=$2; SEED=$3; shift 3
ROWS=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do ROWS+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ -f "$BUDGETS" ] || { echo "no budgets file $BUDGETS: run benchmarks/measure_budget.py first" >&2; exit 2; }
[ ${#ROWS[@]} -gt 0 ] || mapfile -t ROWS < <(python3 -c 'import csv, sys; print(*(r["name"] for r in csv.DictReader(open(sys.argv[1]))), sep="\n")' "$BUDGETS")
PJEPA=${PJEPA:-pjepa}
field() {  # field() ROW COLUMN: one cell of the budgets file (a real CSV: overrides may hold quoted commas)
  python3 -c 'import csv, sys; print(next((r[sys.argv[3]] for r in csv.DictReader(open(sys.argv[1])) if r["name"] == sys.argv[2]), ""))' "$BUDGETS" "$1" "$2"
}
for row in "${ROWS[@]}"; do
  steps=$(field "$row" steps); config=$(field "$row" config); read -r -a own <<< "$(field "$row" overrides)"
  [ -n "$steps" ] || { echo "no row $row in $BUDGETS" >&2; exit 2; }
  run="$OUT/$row/seed$SEED"
  if [ -f "$run/eval/knn_val.json" ]; then echo "[budget_rows] $run: done, skipped"; continue; fi
  echo "[budget_rows] $run: $config ${own[*]} train.max_steps=$steps"
  $PJEPA train --config "$config" --out "$run" --auto-resume ${own[@]+"${own[@]}"} train.seed="$SEED" \
    train.max_steps="$steps" train.time_limit_min=0 train.progress=false "$@"
  $PJEPA eval knn --run "$run" --split val --threads "${THREADS:-1}"
done
