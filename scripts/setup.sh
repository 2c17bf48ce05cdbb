#!/usr/bin/env bash
# Create .venv with the CPU build of torch and pjepa (editable, with test tools).
# torch is pinned HERE, not in pyproject.toml: an unpinned torch would pull a
# multi-GB CUDA build, and GPU users keep the torch they already have.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

pip_install() {  # quiet on success (minus this machine's index warnings), whole log on failure
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: 'pip install $*' failed (log above)" >&2
    exit 1
  fi
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip_install "torch==${PJEPA_TORCH_VERSION:-2.13.0}"
fi
pip_install -e ".[dev,viz]"
.venv/bin/python -c "import torch, pjepa; print(f'pjepa {pjepa.__version__} ready (torch {torch.__version__})')"
