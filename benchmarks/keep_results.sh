#!/usr/bin/env bash
# Copy a sweep's results without its weights (checkpoints, feature caches, TensorBoard events)
# so that they fit in git: bash benchmarks/keep_results.sh runs/sweeps/cifar10-heads benchmarks/results/cifar10-heads
# Only runs the sweep marked finished (sweep_done.json) are kept; `pjepa sweep` over a copy skips them.
set -euo pipefail
SRC=$1; DST=$2
mkdir -p "$DST"
( cd "$SRC" && find . -name sweep_done.json ) | while read -r done; do
  run=$(dirname "$done")
  mkdir -p "$DST/$run"
  cp -r "$SRC/$run/." "$DST/$run/"
  rm -rf "$DST/$run/checkpoints" "$DST/$run/eval/cache" "$DST/$run/tb" "$DST/$run/.lock" "$DST/$run"/events.out.*
  sweep=$(dirname "$run")
  cp "$SRC/$sweep/sweep.json" "$DST/$sweep/sweep.json"
done
du -sh "$DST"
