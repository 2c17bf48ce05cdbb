#!/usr/bin/env bash
# The Tiny ImageNet-100 CPU head table (issue 13 item 3): configs/tin100/cpu.yaml with each head at
# equal epochs (the preset's 10), seeds 0 and 1, no wall-time cap; the head options are those of the
# CIFAR-10 CPU head presets (configs/cifar10/{mdn,autoregressive,flow,flow_matching,diffusion}.yaml).
# kNN@1 on the validation split (choices) and the reported split, and of the context (student) encoder
# too (knn_context), as the Probabilistic-JEPA report rates it; pjepa table shows both votes of both.
# The untrained-encoder and raw-pixel rows come from the deterministic runs (benchmarks/results/tin100-cpu{,-s1}): same data, ViT and seeds, so the
# same baselines (pjepa table counts one per seed); BASELINES=1 rates them again in every run (~4 min each).
#   bash benchmarks/tin100_heads_sweep.sh [ROOT] [extra overrides...]    # HEADS="mdn flow" for a subset
# DRY_RUN=1: check every config and print the grids. Resumable: rerun the same command after an interruption. Table: pjepa table ROOT/*
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/sweeps/tin100-heads}
shift || true
export PJEPA_DATA=${PJEPA_DATA:-../shared/data}
set_options() {  # OPTS: the head overrides of one row
  case $1 in
    deterministic) OPTS=("head.name=deterministic") ;;
    mdn) OPTS=("head.name=mdn" "head.options={components: 5, logvar_weight: 0.1}") ;;
    autoregressive) OPTS=("head.name=autoregressive" "head.options={hidden: 256, depth: 2, components: 3, family: gaussian}") ;;
    flow) OPTS=("head.name=flow" "head.options={objective: nll, layers: 6, hidden: 128}") ;;
    flow_matching) OPTS=("head.name=flow" "head.options={objective: flow_matching, hidden: 128, fm_blocks: 3, ode_steps: 20}") ;;
    diffusion) OPTS=("head.name=diffusion" "head.options={timesteps: 1000, sample_steps: 50, width: 128, blocks: 3}") ;;
    *) echo "unknown head row $1 (deterministic mdn autoregressive flow flow_matching diffusion)" >&2; exit 2 ;;
  esac
}
# The deterministic row is the preset itself, run as benchmarks/results/tin100-cpu{,-s1} (BENCHMARKS.md,
# "Tiny ImageNet-100 on CPU"); HEADS=deterministic trains it again into ROOT.
HEADS=${HEADS:-"mdn autoregressive flow diffusion"}
for head in $HEADS; do
  set_options "$head"
  .venv/bin/pjepa sweep --config tin100/cpu --out "$ROOT/$head" --eval knn_val,knn,knn_context ${BASELINES:+--baselines} \
    ${DRY_RUN:+--dry-run} train.seed=0,1 train.time_limit_min=0 train.progress=false "${OPTS[@]}" "$@"
done
[ -n "${DRY_RUN:-}" ] || .venv/bin/pjepa table benchmarks/results/tin100-cpu/cpu_seed0 benchmarks/results/tin100-cpu-s1/cpu "$ROOT"/* --format md
