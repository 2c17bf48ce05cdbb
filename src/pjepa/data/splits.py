"""The splits a run uses: pretraining, kNN bank, validation (carved from train) and the reported split.

Every choice made by looking at a number (periodic kNN, ``checkpoints/best``,
a learning rate, an early stop) must use a split the tables do not report
(docs/evaluation.md). Most datasets ship only train and test (or val), so
``val_fraction`` of the labelled bank split is held out: seeded, the same
fraction of every class, and left out of both pretraining and the kNN bank.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pjepa.config import Config
from pjepa.data.base import ImageDataset
from pjepa.errors import DataError
from pjepa.utils import stream_seed


def carve_validation(labels: torch.Tensor, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, val) sorted int64 indices: ``round(fraction * n_c)`` random items of every class c in val
    (at least one where a class has two or more items), the rest in rest."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.val_fraction={fraction}: need a fraction in (0, 1) to carve a validation split")
    if bool((labels < 0).any()):
        raise DataError("data.val_fraction needs a labelled split to carve from (this one has unlabelled images); "
                        "set data.bank_split to a labelled split")
    val = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().squeeze(1)
        k = int(round(fraction * len(idx)))
        k = max(k, 1) if len(idx) >= 2 else 0
        val.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    return keep.nonzero().squeeze(1), val_idx


@dataclass
class Splits:
    """train: pretraining images; bank: kNN bank; val: validation (choices); eval: the reported split."""

    train: ImageDataset
    bank: ImageDataset
    val: ImageDataset
    eval: ImageDataset


def load_splits(
    name: str,
    path: str | os.PathLike | Sequence[str] | None,
    options: dict[str, Any],
    train_split: str,
    eval_split: str,
    bank_split: str | None,
    val_fraction: float,
    seed: int,
    cache: str = "memory",
    cache_dir: str | os.PathLike | None = None,
) -> Splits:
    """Load and carve the splits of one run (``pjepa.data.load_dataset`` for each split read; ``cache`` and
    ``cache_dir`` as there)."""
    from pjepa.data import load_dataset  # the package imports this module

    def load(split: str) -> ImageDataset:
        return load_dataset(name, split, path, cache=cache, cache_dir=cache_dir, **options)

    train = load(train_split)
    bank = train if bank_split in (None, train_split) else load(bank_split)
    reported = load(eval_split)
    if val_fraction <= 0:
        return Splits(train, bank, reported, reported)
    g = torch.Generator().manual_seed(seed)
    rest, val_idx = carve_validation(bank.labels, val_fraction, g)
    val = bank.subset(val_idx, f"val({bank.split}, {val_fraction:g})")
    new_bank = bank.subset(rest, bank.split)
    return Splits(new_bank if bank is train else train, new_bank, val, reported)


def splits_for(cfg: Config) -> Splits:
    """The splits of a run with config ``cfg``: training and every evaluation carve the same validation part."""
    d = cfg.data
    return load_splits(d.name, d.path, d.options, d.train_split, d.eval_split, d.bank_split, d.val_fraction,
                       seed=stream_seed(cfg.train.seed, 0, 0, "val-split"), cache=d.cache, cache_dir=d.cache_dir)
