#!/usr/bin/env bash
# The CIFAR-10 CPU-budget acceptance run: train configs/cifar10/cpu.yaml (20-minute
# limit; periodic kNN and checkpoints/best on the validation split carved from train),
# then kNN@1 on the full test split (bank: train minus validation, 45,000; queries:
# 10,000) for the trained target encoder (last and best checkpoints), the same
# architecture at random initialisation, and raw pixels. Prints one markdown table.
#   bash benchmarks/cifar10_cpu.sh [RUN_DIR] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PJEPA_DATA=${PJEPA_DATA:-$(cd .. && pwd)/shared/data}
RUN=${1:-runs/cifar10-cpu}; shift || true
PJ=".venv/bin/pjepa"
start=$(date +%s)
$PJ train --config cifar10/cpu --out "$RUN" train.progress=false "$@"
train_s=$(( $(date +%s) - start ))
$PJ eval knn --run "$RUN"
cp "$RUN/eval/knn.json" "$RUN/eval/knn_last.json"
$PJ eval knn --run "$RUN" --checkpoint best
cp "$RUN/eval/knn.json" "$RUN/eval/knn_best.json"
for flag in "--random-init" "--pixels"; do $PJ eval knn --run "$RUN" $flag; done
.venv/bin/python - "$RUN" "$train_s" <<'PY'
import json, sys
from pathlib import Path
run, train_s = Path(sys.argv[1]), int(sys.argv[2])
info = json.loads((run / "run_info.json").read_text())
last = json.loads((run / "eval" / "knn_last.json").read_text())
best = json.loads((run / "eval" / "knn_best.json").read_text())
print(f"\n{run}: {last['step']} steps x batch {info['global_batch']} in {train_s / 60:.1f} min of wall time "
      f"(incl. periodic kNN); best checkpoint (validation kNN) at step {best['step']}")
print("| features | kNN@1 weighted | kNN@1 majority | bank / queries |\n|---|---|---|---|")
rows = [("I-JEPA target encoder, last", "knn_last.json"), ("I-JEPA target encoder, best on validation", "knn_best.json"),
        ("random init (same ViT)", "knn_random_init.json"), ("raw pixels", "knn_pixels.json")]
for name, f in rows:
    r = json.loads((run / "eval" / f).read_text())
    print(f"| {name} | {r['top1_weighted']:.2f} | {r['top1_majority']:.2f} | {r['n_train']} / {r['n_eval']} |")
PY
