#!/usr/bin/env bash
# The CIFAR-10 CPU-budget acceptance run: train configs/cifar10/cpu.yaml (20-minute
# limit), then kNN@1 on the full test split (50,000 bank / 10,000 queries) for the
# trained target encoder, the same architecture at random initialisation, and raw
# pixels. Prints one markdown table; record it in BENCHMARKS.md.
#   bash benchmarks/cifar10_cpu.sh [RUN_DIR] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/cifar10-cpu}; shift || true
PJ=".venv/bin/pjepa"
start=$(date +%s)
$PJ train --config configs/cifar10/cpu.yaml --out "$RUN" train.progress=false "$@"
train_s=$(( $(date +%s) - start ))
for flag in "" "--random-init" "--pixels"; do $PJ eval knn --run "$RUN" $flag; done
.venv/bin/python - "$RUN" "$train_s" <<'PY'
import json, sys
from pathlib import Path
run, train_s = Path(sys.argv[1]), int(sys.argv[2])
info = json.loads((run / "run_info.json").read_text())
steps = json.loads((run / "eval" / "knn.json").read_text())["step"]
print(f"\n{run}: {steps} steps x batch {info['global_batch']} in {train_s / 60:.1f} min of wall time (incl. periodic kNN)")
print("| features | kNN@1 weighted | kNN@1 majority | bank / queries |\n|---|---|---|---|")
for name, f in [("I-JEPA target encoder", "knn.json"), ("random init (same ViT)", "knn_random_init.json"), ("raw pixels", "knn_pixels.json")]:
    r = json.loads((run / "eval" / f).read_text())
    print(f"| {name} | {r['top1_weighted']:.2f} | {r['top1_majority']:.2f} | {r['n_train']} / {r['n_eval']} |")
PY
