"""The images and models a figure runs on: a seeded subset of the run's validation split, the run's
mask sampler, its method at a checkpoint. Every figure of one run draws the same images."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from pjepa.data import resize_normalize, splits_for
from pjepa.data.splits import Splits
from pjepa.masking import build_mask_sampler
from pjepa.masking.multiblock import MaskBatch
from pjepa.methods import Method
from pjepa.methods.load import load_run_method
from pjepa.runs import Run
from pjepa.utils import stream_seed

_SPLITS: dict[tuple[str, int], Splits] = {}


def run_splits(run: Run) -> Splits:
    """The run's splits, decoded once per process for every run with the same data config and seed
    (decoding CIFAR-10 takes seconds and every figure of a report needs it); two kept at most."""
    key = (repr(run.config.data), run.config.train.seed)
    if key not in _SPLITS:
        while len(_SPLITS) >= 2:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = splits_for(run.config)
    return _SPLITS[key]


def figure_images(run: Run, count: int, stream: str = "figures") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (count, 3, S, S) at the run's image size, labels (count,)): a seeded random subset of the
    validation split (all of it if smaller), the same for every figure that asks with ``stream``."""
    cfg = run.config
    val = run_splits(run).val
    g = torch.Generator().manual_seed(stream_seed(cfg.train.seed, 0, 0, stream))
    idx = torch.randperm(len(val), generator=g)[: min(count, len(val))]
    images = val.images[idx]
    S = cfg.data.image_size
    if images.shape[-1] != S or images.shape[-2] != S:
        images = F.interpolate(images.float(), size=(S, S), mode="bilinear", antialias=True).round().clamp(0, 255)
        images = images.to(torch.uint8)
    return images, val.labels[idx]


def normalise(run: Run, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> the normalised float input the run's encoder saw."""
    mean, std = run.stats()
    return resize_normalize(images, run.config.data.image_size, mean, std)


def grid_size(run: Run) -> int:
    return run.config.data.image_size // run.config.model.encoder.patch_size


def draw_masks(run: Run, batch_size: int, seed_stream: str = "figure-masks") -> MaskBatch:
    """One draw of the run's own mask sampler (``mask.name`` / ``mask.options``) under a fixed seed."""
    cfg = run.config
    sampler = build_mask_sampler(cfg.mask.name, grid_size(run), dict(cfg.mask.options))
    return sampler(batch_size, mask_generator(run, seed_stream))


def mask_generator(run: Run, seed_stream: str = "figure-masks") -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(run.config.train.seed, 0, 0, seed_stream))


@lru_cache(maxsize=4)
def _method(path: str, checkpoint: str) -> tuple[Method, int]:
    method, step = load_run_method(Run(path), checkpoint)
    return method.eval(), step


def run_method(run: Run, checkpoint: str = "last") -> tuple[Method, int]:
    """(the run's method in eval mode on CPU, the checkpoint's step); cached for the figures of one report."""
    return _method(str(run.path.resolve()), checkpoint)
