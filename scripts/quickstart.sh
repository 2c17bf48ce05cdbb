#!/usr/bin/env bash
# Set up a fresh machine, pretrain the smoke preset on synthetic data, print kNN@1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/quickstart}
rm -rf "$RUN"
.venv/bin/pjepa train --config configs/smoke.yaml --out "$RUN"
.venv/bin/pjepa eval knn --run "$RUN"
