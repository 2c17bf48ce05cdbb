#!/usr/bin/env bash
# Keep a results table in git as a per-run CSV (one row per run and seed; no weights, no run folders):
#   bash benchmarks/keep_results.sh benchmarks/results/NAME.csv RUN_OR_SWEEP... [--by knn_val]
# `pjepa table benchmarks/results/NAME.csv` recomputes the grouped table and its statistics from it.
set -euo pipefail
OUT=$1; shift
.venv/bin/pjepa table "$@" --format md --per-run --csv "$OUT"
