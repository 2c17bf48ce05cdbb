#!/usr/bin/env bash
# Create .venv with the CPU build of torch and pjepa (editable, with test tools).
# torch is pinned HERE, not in pyproject.toml: an unpinned torch would pull a
# multi-GB CUDA build, and GPU users keep the torch they already have.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${PJEPA_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, pjepa; print(f'pjepa {pjepa.__version__} ready (torch {torch.__version__})')"
