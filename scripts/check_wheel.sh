#!/usr/bin/env bash
# Build the sdist and the wheel, install the wheel into a fresh virtual environment (CPU torch first),
# and run the Quickstart's first steps from it, outside the source tree: what a user of the package gets.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf dist
.venv/bin/python -m pip install -q build 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m build --sdist --wheel --outdir dist >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
ls dist
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "torch==${PJEPA_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
"$WORK/venv/bin/python" -m pip install -q "$ROOT"/dist/pjepa-*.whl 2>&1 | grep -v "^WARNING: Location" || true
cd "$WORK"
export PJEPA_CACHE_DIR="$WORK/cache"
"$WORK/venv/bin/pjepa" presets > presets.txt && head -3 presets.txt  # (a pipe into head would end pjepa early)
"$WORK/venv/bin/pjepa" train --config smoke --out runs/smoke train.max_steps=20 train.eval_every=0 train.progress=false
"$WORK/venv/bin/pjepa" eval knn --run runs/smoke --eval-limit 200 --train-limit 1000
"$WORK/venv/bin/python" - <<'PY'
import torch, pjepa
from pjepa import load_encoder
enc = load_encoder("runs/smoke")
feats = enc.embed(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))
assert feats.shape == (4, enc.embed_dim), feats.shape
from pjepa.studies.generative.config import load_study_config, study_presets
assert {"cifar10_cpu", "tiny"} <= set(study_presets()), study_presets()  # the study's presets are package data
assert load_study_config("tiny").sample.n > 0
print(f"wheel OK: pjepa {pjepa.__version__} from {pjepa.__file__}, features {tuple(feats.shape)}")
PY
