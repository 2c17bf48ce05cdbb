#!/usr/bin/env bash
# The equal-budget head comparison on CIFAR-10 (CPU): train configs/cifar10/<head>.yaml
# (the deterministic preset cpu.yaml with only the head changed: 7 epochs, batch 128),
# then kNN@1 on the full test split (50,000 bank / 10,000 queries) and the shared head
# metrics on 1,000 test images. The deterministic run is benchmarks/cifar10_cpu.sh.
#   bash benchmarks/cifar10_heads.sh HEAD [RUN_DIR] [key=value ...]      HEAD: mdn | autoregressive | flow | flow_matching | diffusion
# Then: pjepa table runs/cifar10-cpu runs/cifar10-<head> ...
set -euo pipefail
cd "$(dirname "$0")/.."
export PJEPA_DATA=${PJEPA_DATA:-$(cd .. && pwd)/shared/data}   # where the presets find their data files
HEAD=${1:?usage: cifar10_heads.sh HEAD [RUN_DIR] [key=value ...]}; shift
RUN=${1:-runs/cifar10-$HEAD}; shift || true
PJ=".venv/bin/pjepa"
$PJ train --config "configs/cifar10/$HEAD.yaml" --out "$RUN" train.progress=false "$@"
$PJ eval knn --run "$RUN"
$PJ eval head --run "$RUN"
