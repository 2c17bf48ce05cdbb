"""The dataset type every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pjepa.data.diskimages import DiskImages

#: A decoded split's images: one tensor in memory, or rows read from the disk cache (``data.cache: disk``).
Images = torch.Tensor | DiskImages


@dataclass
class ImageDataset:
    """A decoded split (decode once, index forever): one uint8 tensor, or a ``DiskImages`` view of the
    disk cache that reads the rows asked for (``images[idx]`` is a tensor either way).

    Attributes:
        images: uint8 (N, 3, H, W), RGB: a tensor or ``DiskImages``.
        labels: int64 (N,), in [0, len(class_names)); -1 for unlabelled images.
        class_names: names by label index.
        name: dataset name as registered (e.g. "cifar10").
        split: split name (e.g. "train", "val", "test", "unlabeled").
    """

    images: Images
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

    @property
    def on_disk(self) -> bool:
        """True when the images are read from the disk cache rather than held in memory."""
        return isinstance(self.images, DiskImages)

    def subset(self, idx: torch.Tensor, split: str) -> ImageDataset:
        """The images at ``idx`` (int64 (K,)) as a dataset named ``split`` (on disk: a view, nothing read)."""
        images = self.images.subset(idx) if isinstance(self.images, DiskImages) else self.images[idx]
        return ImageDataset(images, self.labels[idx], self.class_names, self.name, split)

    def images_on(self, device: torch.device | str) -> Images:
        """Where batches are indexed from: in memory, the whole split moved to ``device`` once; on disk, the
        ``DiskImages`` themselves (each batch's rows are read, then moved)."""
        return self.images if isinstance(self.images, DiskImages) else self.images.to(device)
