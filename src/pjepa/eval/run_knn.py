"""``pjepa eval knn --run DIR``: kNN@1 of a run's encoder, written to DIR/eval/.

Features: the target (EMA) encoder's average-pooled last layer by default, the
context encoder on request, and two baselines on the same data and
preprocessing: the same architecture at random initialisation and raw
normalised pixels. The train split is the bank, the validation split the
queries (GUIDE section 6); k, T, both votes, the encoder and the split sizes
are recorded with the result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from pjepa.config import Config, load_config
from pjepa.data import ImageDataset, load_dataset
from pjepa.errors import CheckpointError, ConfigError
from pjepa.eval.features import extract_features, pixel_features
from pjepa.eval.knn import knn_evaluate, require_labels
from pjepa.methods import build_method
from pjepa.train.checkpoint import checkpoint_path, load_checkpoint, load_weights_into
from pjepa.train.distributed import resolve_device
from pjepa.utils import seed_everything, stream_seed


def load_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a pjepa run directory (no config.yaml); pass the folder `pjepa train` wrote")
    return load_config(path)


def load_run_stats(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    path = Path(run_dir) / "data_stats.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run directory is incomplete")
    s = json.loads(path.read_text())
    return torch.tensor(s["mean"]), torch.tensor(s["std"])


def subset(ds: ImageDataset, limit: int, seed: int, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels), a seeded random subset of ``limit`` items (all if 0): never a prefix."""
    if limit <= 0 or limit >= len(ds):
        return ds.images, ds.labels
    g = torch.Generator().manual_seed(stream_seed(seed, 0, 0, stream))
    idx = torch.randperm(len(ds), generator=g)[:limit]
    return ds.images[idx], ds.labels[idx]


def load_run_method(cfg: Config, run_dir: Path, checkpoint: str = "last", random_init: bool = False):
    """(method, step): the run's method with the weights of ``checkpoint`` ("last" / "best"), or untrained."""
    seed_everything(cfg.train.seed)
    method = build_method(cfg)
    if random_init:
        return method, 0
    if checkpoint_path(Path(run_dir) / "checkpoints", checkpoint) is None:
        raise CheckpointError(f"no checkpoint {checkpoint!r} in {run_dir}/checkpoints: train first or pick --checkpoint last")
    weights, state = load_checkpoint(Path(run_dir) / "checkpoints", checkpoint)
    load_weights_into(method, weights, Path(run_dir))
    return method, int(state["step"])


def _encoder_features(cfg, run_dir, which, random_init, checkpoint, images, mean, std, device, progress):
    """Features of the bank and query images, and the step of the weights used."""
    method, step = load_run_method(cfg, run_dir, checkpoint, random_init)
    encoder = method.feature_encoder(which).to(device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    feats = [extract_features(encoder, x, cfg.data.image_size, mean, std, device, cfg.eval.batch_size, amp,
                              progress=progress, desc=f"features ({name})")
             for name, x in zip(("bank", "queries"), images)]
    return feats, step


def evaluate_knn(
    run_dir: str | Path,
    encoder: str = "target",
    baseline: str | None = None,
    checkpoint: str = "last",
    train_limit: int = 0,
    eval_limit: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the kNN protocol on ``run_dir`` and write ``eval/knn[_<baseline>].json``.

    Args:
        encoder: "target" (EMA teacher, default) or "context".
        baseline: None, "random-init" (same architecture, untrained) or "pixels".
        checkpoint: "last" or "best".
        train_limit / eval_limit: seeded random subsets of the bank / queries (0 = all).
    """
    if baseline not in (None, "random-init", "pixels"):
        raise ConfigError(f"baseline {baseline!r}: choose random-init or pixels")
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    mean, std = load_run_stats(run_dir)
    dev = resolve_device(device)
    d = cfg.data
    t0 = time.perf_counter()
    train = load_dataset(d.name, d.bank_split or d.train_split, d.path, **d.options)
    val = load_dataset(d.name, d.val_split, d.path, **d.options)
    require_labels(train, "data.bank_split")
    require_labels(val, "data.val_split")
    (xb, yb), (xq, yq) = subset(train, train_limit, cfg.train.seed, "bank"), subset(val, eval_limit, cfg.train.seed, "query")
    if baseline == "pixels":
        feats, step, which = [pixel_features(x, d.image_size, mean, std) for x in (xb, xq)], 0, "pixels"
    else:
        feats, step = _encoder_features(cfg, run_dir, encoder, baseline == "random-init", checkpoint,
                                        (xb, xq), mean, std, dev, progress)
        which = encoder
    votes = knn_evaluate(feats[0].to(dev), yb.to(dev), feats[1].to(dev), yq.to(dev), train.num_classes,
                         k=cfg.eval.k, temperature=cfg.eval.temperature)
    result = {
        "top1": votes["weighted"], "top1_weighted": votes["weighted"], "top1_majority": votes["majority"],
        "k": cfg.eval.k, "temperature": cfg.eval.temperature, "vote": "weighted",
        "encoder": which, "baseline": baseline, "checkpoint": None if baseline else checkpoint,
        "dataset": d.name, "split": d.val_split, "bank_split": d.bank_split or d.train_split,
        "n_train": int(xb.shape[0]), "n_eval": int(xq.shape[0]), "feature_dim": int(feats[0].shape[1]),
        "step": step, "seconds": round(time.perf_counter() - t0, 2),
    }
    out = run_dir / "eval" / (f"knn_{baseline.replace('-', '_')}.json" if baseline else "knn.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(out)
    return result
