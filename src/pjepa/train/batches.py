"""Batches: which images a step trains on, and their augmentation on the device.

The order of an epoch and the augmentation and masks of a step come from
generators seeded from ``(seed, epoch)`` / ``(seed, step, rank)``: a step's
batch is a pure function of the step, so a resumed run repeats it exactly.
"""

from __future__ import annotations

import torch

from pjepa.config import DataConfig
from pjepa.data import ImageDataset, random_resized_crop_flip
from pjepa.errors import ConfigError
from pjepa.methods import Batch
from pjepa.train.distributed import DistInfo
from pjepa.utils import stream_seed


class Batcher:
    """Global-batch indices of a step: a seeded permutation per epoch, sharded by rank."""

    def __init__(self, n: int, global_batch: int, info: DistInfo, seed: int, device: torch.device) -> None:
        if global_batch % info.world_size != 0:
            raise ConfigError(
                f"optim.batch_size={global_batch} is not divisible by the {info.world_size} processes"
            )
        self.steps_per_epoch = n // global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"optim.batch_size={global_batch} is larger than the training set ({n} images); "
                              "lower optim.batch_size")
        self.n, self.global_batch, self.info, self.seed, self.device = n, global_batch, info, seed, device
        self.local_batch = global_batch // info.world_size
        self._epoch, self._perm = -1, torch.empty(0)

    def indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, 0, "order"))
            self._perm, self._epoch = torch.randperm(self.n, generator=g).to(self.device), epoch
        start = pos * self.global_batch + self.info.rank * self.local_batch
        return self._perm[start : start + self.local_batch]


class BatchMaker:
    """Step -> ``Batch``: the training split held once on the device as uint8, cropped, flipped and
    normalised there, with the step's mask (CPU) and noise (device) generators seeded."""

    def __init__(self, train: ImageDataset, cfg: DataConfig, batcher: Batcher, mean: torch.Tensor,
                 std: torch.Tensor, seed: int, device: torch.device) -> None:
        self.images = train.images.to(device)  # (N, 3, H, W) uint8: the whole split on the device
        self.labels = train.labels.to(device)  # (N,)
        self.cfg, self.batcher, self.seed, self.device = cfg, batcher, seed, device
        self.rank = batcher.info.rank
        self.mean, self.std = mean.to(device), std.to(device)
        self.aug_gen = torch.Generator(device=device)
        self.mask_gen = torch.Generator()
        self.noise_gen = torch.Generator(device=device)

    def __call__(self, step: int, diagnostics: bool = False) -> Batch:
        d = self.cfg
        idx = self.batcher.indices(step)
        self.aug_gen.manual_seed(stream_seed(self.seed, step, self.rank, "augment"))
        self.mask_gen.manual_seed(stream_seed(self.seed, step, self.rank, "mask"))
        self.noise_gen.manual_seed(stream_seed(self.seed, step, self.rank, "noise"))
        x = random_resized_crop_flip(
            self.images[idx], d.image_size, self.mean, self.std, scale=d.crop_scale,
            ratio=d.crop_ratio, flip_p=0.5 if d.flip else 0.0, generator=self.aug_gen,
        )  # (b, 3, S, S) float
        return Batch(x, self.labels[idx], step, self.mask_gen, self.noise_gen, diagnostics)
