"""The in-memory dataset type every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageDataset:
    """A decoded split, held as one uint8 tensor (decode once, index forever).

    Attributes:
        images: uint8 (N, 3, H, W), RGB.
        labels: int64 (N,), in [0, len(class_names)); -1 for unlabelled images.
        class_names: names by label index.
        name: dataset name as registered (e.g. "cifar10").
        split: split name (e.g. "train", "val", "test", "unlabeled").
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, idx: torch.Tensor, split: str) -> "ImageDataset":
        """The images at ``idx`` (int64 (K,)) as a dataset named ``split``."""
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names, self.name, split)
