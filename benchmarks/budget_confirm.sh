#!/usr/bin/env bash
# The finalists of a fixed-compute ablation at the full budget, rated on the reported split (CIFAR-10 test,
# Tiny ImageNet-100 val): each row of the budgets file (what benchmarks/measure_budget.py wrote for the
# half budget) trains SCALE times its measured step count, then kNN and the linear probe rate the encoder
# (each rates the untrained encoder and raw pixels beside it by itself), and kNN rates PCA-whitened pixels.
#   OMP_NUM_THREADS=1 bash benchmarks/budget_confirm.sh BUDGETS OUT SEED SCALE ROW [ROW ...] [-- key=value ...]
#   OMP_NUM_THREADS=1 bash benchmarks/budget_confirm.sh benchmarks/budgets/cifar10_levers.csv runs/final 0 2 \
#       vicreg_token -- train.num_threads=1       # one lane per seed, seeds 0, 1, 2
#   pjepa table runs/final/* --by knn --format md
# Resumable like benchmarks/budget_rows.sh: a rated run is skipped, a killed one continues from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGETS=$1; OUT=$2; SEED=$3; SCALE=$4; shift 4
ROWS=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do ROWS+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ -f "$BUDGETS" ] || { echo "no budgets file $BUDGETS: run benchmarks/measure_budget.py first" >&2; exit 2; }
[ ${#ROWS[@]} -gt 0 ] || { echo "name the rows to confirm (the finalists chosen on the validation split)" >&2; exit 2; }
python3 -c 'import sys; s = float(sys.argv[1]); sys.exit(0 if s > 0 else 1)' "$SCALE" 2>/dev/null \
  || { echo "SCALE $SCALE: a positive number (2 for the full budget of a half-budget file)" >&2; exit 2; }
PJEPA=${PJEPA:-pjepa}; THREADS=${THREADS:-1}
field() {  # field() ROW COLUMN: one cell of the budgets file (a real CSV: overrides may hold quoted commas)
  python3 -c 'import csv, sys; print(next((r[sys.argv[3]] for r in csv.DictReader(open(sys.argv[1])) if r["name"] == sys.argv[2]), ""))' "$BUDGETS" "$1" "$2"
}
for row in "${ROWS[@]}"; do
  half=$(field "$row" steps); config=$(field "$row" config); read -r -a own <<< "$(field "$row" overrides)"
  [ -n "$half" ] || { echo "no row $row in $BUDGETS" >&2; exit 2; }
  steps=$(python3 -c 'import sys; print(round(int(sys.argv[1]) * float(sys.argv[2])))' "$half" "$SCALE")
  run="$OUT/$row/seed$SEED"
  echo "[budget_confirm] $run: $config ${own[*]} train.max_steps=$steps ($half x $SCALE)"
  if [ ! -f "$run/eval/knn_pixels_white.json" ]; then
    $PJEPA train --config "$config" --out "$run" --auto-resume ${own[@]+"${own[@]}"} train.seed="$SEED" \
      train.max_steps="$steps" train.time_limit_min=0 train.progress=false "$@"
    [ -f "$run/eval/knn.json" ] || $PJEPA eval knn --run "$run" --threads "$THREADS"
    [ -f "$run/eval/linear.json" ] || $PJEPA eval linear --run "$run" --threads "$THREADS"
    $PJEPA eval knn --run "$run" --pixels --whiten --threads "$THREADS"
  else
    echo "[budget_confirm] $run: rated, skipped"
  fi
done
