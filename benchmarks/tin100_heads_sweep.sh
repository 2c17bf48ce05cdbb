#!/usr/bin/env bash
# The Tiny ImageNet-100 CPU head table: configs/tin100/cpu.yaml with each head at
# equal epochs (the preset's 10), seeds 0 and 1, no wall-time cap; the head options are those of the
# CIFAR-10 CPU head presets (configs/cifar10/{mdn,autoregressive,flow,flow_matching,diffusion}.yaml).
# kNN@1 on the validation split (choices) and the reported split, and of the context (student) encoder
# too (knn_context), as the Probabilistic-JEPA report rates it; pjepa table shows both votes of both.
# The untrained-encoder and raw-pixel rows come from the deterministic row's sweep (--baselines): same data,
# ViT and seeds for every head, so pjepa table counts them once per seed.
#   bash benchmarks/tin100_heads_sweep.sh [ROOT] [extra overrides...]    # HEADS="mdn flow" for a subset
# DRY_RUN=1: check every config and print the grids. Resumable: rerun the same command after an interruption. Table: pjepa table ROOT/*
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/sweeps/tin100-heads}
shift || true
: "${PJEPA_DATA:?set PJEPA_DATA to the folder holding tin100_*_jpeg.npz (see docs/data.md)}"
set_options() {  # OPTS: the head overrides of one row
  case $1 in
    deterministic) OPTS=("head.name=deterministic") ;;
    mdn) OPTS=("head.name=mdn" "head.options={components: 5, logvar_weight: 0.1}") ;;
    autoregressive) OPTS=("head.name=autoregressive" "head.options={hidden: 256, depth: 2, components: 3, family: gaussian}") ;;
    flow) OPTS=("head.name=flow" "head.options={layers: 6, hidden: 128}") ;;
    flow_matching) OPTS=("head.name=flow_matching" "head.options={hidden: 128, fm_blocks: 3, ode_steps: 20}") ;;
    diffusion) OPTS=("head.name=diffusion" "head.options={timesteps: 1000, sample_steps: 50, width: 128, blocks: 3}") ;;
    *) echo "unknown head row $1 (deterministic mdn autoregressive flow flow_matching diffusion)" >&2; exit 2 ;;
  esac
}
HEADS=${HEADS:-"deterministic mdn autoregressive flow diffusion"}
for head in $HEADS; do
  set_options "$head"
  BASELINES=()
  [ "$head" = "${HEADS%% *}" ] && BASELINES=(--baselines)
  .venv/bin/pjepa sweep --config tin100/cpu --out "$ROOT/$head" --eval knn_val,knn,knn_context ${BASELINES[@]+"${BASELINES[@]}"} \
    ${DRY_RUN:+--dry-run} train.seed=0,1 train.time_limit_min=0 train.progress=false "${OPTS[@]}" "$@"
done
[ -n "${DRY_RUN:-}" ] || .venv/bin/pjepa table "$ROOT"/* --format md --per-run --csv "${KEEP:-$ROOT/table.csv}"
