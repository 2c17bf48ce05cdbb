"""What a run's features know, on the validation split: kNN@1 (weighted, k=20, T=0.07) of the trained
target and context encoders, the untrained encoder and raw pixels, each under four feature treatments
fitted on the bank (raw; centred; standardised per dimension; PCA-whitened, eigenvalues floored at
1e-3 of the largest), for the last layer and the last N layers concatenated.

    python benchmarks/feature_treatments.py RUN_DIR [N]

Reads the validation split (held out of the bank), never the reported split: it is for choices.
"""

from __future__ import annotations

import sys

import torch

from pjepa.eval.knn import knn_evaluate, whiten
from pjepa.eval.sources import Source, split_features
from pjepa.runs import Run

TREATMENTS = ("raw", "center", "std", "white")


def treat(bank: torch.Tensor, query: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F), (M, F) -> the same, transformed by statistics of ``bank`` only ("white": ``pjepa eval knn --whiten``)."""
    if how == "raw":
        return bank, query
    if how == "white":
        return whiten(bank, query)
    mu = bank.mean(0)
    if how == "center":
        return bank - mu, query - mu
    sd = bank.std(0).clamp_min(1e-6)
    return (bank - mu) / sd, (query - mu) / sd


def main() -> None:
    run = Run(sys.argv[1])
    deep = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    sources = {"target": Source("target"), "context": Source("context"),
               "untrained": Source("target", baseline="random-init"), "pixels": Source(baseline="pixels")}
    print("source,layers," + ",".join(TREATMENTS))
    for name, source in sources.items():
        for layers in (1,) if name == "pixels" else (1, min(deep, run.config.model.encoder.depth)):
            feats, _ = split_features(run, source, torch.device("cpu"), layers, progress=False)
            (fb, yb), (fq, yq) = feats["bank"], feats["val"]
            cells = []
            for how in TREATMENTS:
                b, q = treat(fb.float(), fq.float(), how)
                cells.append(knn_evaluate(b, yb, q, yq, int(yb.max()) + 1, k=20, temperature=0.07)["weighted"])
            print(f"{name},{layers}," + ",".join(f"{c:.1f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
