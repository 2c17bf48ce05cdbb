"""Batches: which images a step trains on, and their augmentation on the device.

The order of an epoch and the augmentation and masks of a step come from
generators seeded from ``(seed, epoch)`` / ``(seed, step, rank)``: a step's
batch is a pure function of the step, so a resumed run repeats it exactly.

In memory (``data.cache: memory``) the training split sits on the device and a
batch is an index into it. From the disk cache each rank reads only the rows of
its own share of the batch, one step ahead on a background thread (the reads
release the GIL), and moves them to the device: the same rows in the same order,
so the same batch, bit for bit.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

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
        self._epoch, self._perm, self._host_perm = -1, torch.empty(0), torch.empty(0)

    def _slice(self, step: int, host: bool) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, 0, "order"))
            self._host_perm = torch.randperm(self.n, generator=g)
            self._perm, self._epoch = self._host_perm.to(self.device), epoch
        start = pos * self.global_batch + self.info.rank * self.local_batch
        return (self._host_perm if host else self._perm)[start : start + self.local_batch]

    def indices(self, step: int) -> torch.Tensor:
        """This rank's share of the global batch of ``step``: int64 (local_batch,) on the device."""
        return self._slice(step, host=False)

    def host_indices(self, step: int) -> torch.Tensor:
        """``indices(step)`` on the CPU, without a device-to-host copy (what a read from disk needs)."""
        return self._slice(step, host=True)


class BatchMaker:
    """Step -> ``Batch``: the training split's uint8 rows of the step (held on the device, or read from the
    disk cache), cropped, flipped and normalised on the device, with the step's mask (CPU) and noise
    (device) generators seeded."""

    def __init__(self, train: ImageDataset, cfg: DataConfig, batcher: Batcher, mean: torch.Tensor,
                 std: torch.Tensor, seed: int, device: torch.device) -> None:
        self.on_disk = train.on_disk
        self.images = train.images_on(device)  # (N, 3, H, W) uint8: on the device, or DiskImages
        self.labels = train.labels.to(device)  # (N,)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="pjepa-read") if self.on_disk else None
        self._ahead: tuple[int, Future] | None = None  # (step, its rows being read)
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
            self._rows(step, idx), d.image_size, self.mean, self.std, scale=d.crop_scale,
            ratio=d.crop_ratio, flip_p=0.5 if d.flip else 0.0, generator=self.aug_gen,
        )  # (b, 3, S, S) float
        return Batch(x, self.labels[idx], step, self.mask_gen, self.noise_gen, diagnostics)

    def _rows(self, step: int, idx: torch.Tensor) -> torch.Tensor:
        """uint8 (b, 3, H, W) rows ``idx`` of ``step`` on the device; from disk, read ahead one step."""
        if self._reader is None:  # in memory
            return self.images[idx]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == step:
            rows = ahead[1].result()
        else:  # the first step, or a jump (a resume)
            rows = self.images[self.batcher.host_indices(step)]
        self._ahead = (step + 1, self._reader.submit(self.images.__getitem__, self.batcher.host_indices(step + 1)))
        return rows.to(self.device)
