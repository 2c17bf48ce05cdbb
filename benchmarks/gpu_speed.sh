#!/usr/bin/env bash
# Every speed measurement of the Speed page on one CUDA device, in one command:
#
#   bash benchmarks/gpu_speed.sh OUT [/path/to/official/ijepa]
#
# OUT gets one JSON per measurement (pjepa bench at the reference model and the CPU presets, with and
# without train.compile; the side-by-side against the official I-JEPA step when its clone is given) and
# a log. Runs from a source checkout without installing (PYTHONPATH=src), so a machine with its own CUDA
# build of torch and no package registry can run it. A measurement that fails is logged and the rest go on.
set -u
OUT=${1:?usage: bash benchmarks/gpu_speed.sh OUT [/path/to/official/ijepa]}
OFFICIAL=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
REF=(model.predictor.embed_dim=384 model.predictor.num_heads=8 optim.batch_size=64)
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA device')" || exit 1
run() {  # file name in OUT (stdout goes there), command...
  local name=$1; shift
  echo "[gpu_speed] $name: $*" | tee -a "$OUT/log.txt"
  if "$@" > "$OUT/$name" 2>> "$OUT/log.txt"; then echo "[gpu_speed] $name: done" | tee -a "$OUT/log.txt"
  else echo "[gpu_speed] $name: FAILED (rc $?), see $OUT/log.txt" | tee -a "$OUT/log.txt"; fi
}
run bench_reference.json python -m pjepa bench --config tin100/deterministic --precision bf16,fp32 --steps 50 --json "${REF[@]}"
run bench_reference_compile.json python -m pjepa bench --config tin100/deterministic --precision bf16 --steps 50 --json \
    "${REF[@]}" train.compile=true
for preset in smoke cifar10/cpu tin100/cpu; do
  run "bench_${preset//\//_}.json" python -m pjepa bench --config "$preset" --precision auto --steps 50 --json
done
if [ -n "$OFFICIAL" ]; then
  run vs_official.txt python "$ROOT/benchmarks/vs_official.py" --official "$OFFICIAL" --device cuda --precision bf16 \
      --rounds 4 --json "$OUT/vs_official.json"
fi
echo "[gpu_speed] results in $OUT"
