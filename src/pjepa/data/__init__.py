"""Datasets: loaders (registered by name), decoding, download and GPU transforms.

    ds = load_dataset("tiny-imagenet-100", "train", path="shared/data/tin100_train_*_jpeg.npz")
    ds.images  # uint8 (N, 3, H, W), decoded once
    ds.labels  # int64 (N,)

Every loader is ``loader(split, path, **options) -> ImageDataset`` and lives in
``DATASETS``; importing this package imports (and so registers) all of them.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

from pjepa.data import cifar, imagefolder, npz, stl10, synthetic, tiny_imagenet  # noqa: F401  (register)
from pjepa.data.base import ImageDataset
from pjepa.data.registry import DATASETS
from pjepa.data.transforms import channel_stats, random_resized_crop_flip, resize_normalize
from pjepa.errors import DataError

__all__ = [
    "DATASETS",
    "ImageDataset",
    "channel_stats",
    "dataset_options",
    "load_dataset",
    "random_resized_crop_flip",
    "resize_normalize",
]


def dataset_options(name: str) -> list[str]:
    """The option names the loader ``name`` accepts (its keyword-only parameters)."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(
    name: str,
    split: str,
    path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    **options: Any,
) -> ImageDataset:
    """Load ``split`` of the registered dataset ``name``.

    ``path`` is a file, folder, glob or list of files (what each loader reads
    is in its docstring); None means "download into the cache" where the
    dataset supports it. Unknown ``options`` raise DataError naming them.
    """
    loader = DATASETS.get(name)
    known = dataset_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(
            f"dataset {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(known) or 'no options'}"
        )
    if not isinstance(split, str) or not split:
        raise DataError(f"split must be a non-empty string like 'train', got {split!r}")
    return loader(split, path, **options)
