#!/usr/bin/env bash
# Set up a fresh machine, pretrain the smoke preset on synthetic data, then print kNN@1 of the
# trained encoder beside the untrained encoder and raw pixels (same split, same protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/quickstart}
rm -rf "$RUN"
.venv/bin/pjepa train --config smoke --out "$RUN" train.progress=false
.venv/bin/pjepa eval knn --run "$RUN" --random-init
.venv/bin/pjepa eval knn --run "$RUN" --pixels
.venv/bin/pjepa eval knn --run "$RUN"
.venv/bin/pjepa table "$RUN" --format md
