"""Datasets: loaders (registered by name), decoding, download and GPU transforms.

    ds = load_dataset("tiny-imagenet-100", "train", path="data/tin100_train_*_jpeg.npz")
    ds.images  # uint8 (N, 3, H, W), decoded once
    ds.labels  # int64 (N,)
    ds = load_dataset("imagefolder", "train", path="/data/imagenet100", cache="disk", image_size=224)
    ds.images[idx]  # decoded once into a file (pjepa.data.diskcache); each read gives a uint8 tensor

Every loader is ``loader(split, path, **options) -> ImageDataset``, registered in
``DATASETS`` by its own module (``@DATASETS.register("name")``); importing this
package imports every module of it, and so registers all of them: a new dataset is
one new file.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

from pjepa.data.base import ImageDataset, Images
from pjepa.data.diskcache import load_cached
from pjepa.data.diskimages import DiskImages
from pjepa.data.registry import DATASETS
from pjepa.data.splits import Splits, carve_validation, load_splits, splits_for
from pjepa.data.transforms import channel_stats, random_resized_crop_flip, resize_normalize
from pjepa.errors import DataError
from pjepa.registry import import_modules

import_modules(__name__, __path__)  # each loader module registers itself

__all__ = [
    "CACHE_MODES",
    "DATASETS",
    "DiskImages",
    "ImageDataset",
    "Images",
    "channel_stats",
    "Splits",
    "carve_validation",
    "dataset_options",
    "expand_data_path",
    "load_splits",
    "load_dataset",
    "random_resized_crop_flip",
    "resize_normalize",
    "splits_for",
]


#: Where a decoded split lives (``data.cache``): one tensor in memory, or a file read row by row.
CACHE_MODES = ("memory", "disk")


def dataset_options(name: str) -> list[str]:
    """The option names the loader ``name`` accepts (its keyword-only parameters)."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(
    name: str,
    split: str,
    path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    cache: str = "memory",
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> ImageDataset:
    """Load ``split`` of the registered dataset ``name``.

    ``path`` is a file, folder, glob or list of files (what each loader reads
    is in its docstring); None means "download into the cache" where the
    dataset supports it. Unknown ``options`` raise DataError naming them.
    ``cache="disk"`` decodes the split once into a folder under ``cache_dir``
    (default ``$PJEPA_CACHE/decoded``) and reads rows from there
    (``pjepa.data.diskcache``); ``"memory"`` holds it as one tensor.
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
    if cache not in CACHE_MODES:
        raise DataError(f"data.cache={cache!r}: choose {' or '.join(CACHE_MODES)}")
    path = expand_data_path(path)
    if cache == "memory":
        return loader(split, path, **options)
    return load_cached(name, split, path, options, lambda: loader(split, path, **options), cache_dir)


def _expand(p: str | os.PathLike) -> str | os.PathLike:
    if not isinstance(p, str) or "PJEPA_DATA" not in p:
        return p
    if not os.environ.get("PJEPA_DATA"):
        raise DataError(
            f"data.path={p!r} uses $PJEPA_DATA, which is not set: export PJEPA_DATA=<the folder holding the "
            "dataset files> or pass data.path=<file, folder or glob> (data.path=null downloads the dataset; "
            "how to get each preset's data: docs/data.md)"
        )
    return os.path.expandvars(p)


def expand_data_path(
    path: str | os.PathLike | Sequence[str | os.PathLike] | None,
) -> str | os.PathLike | list[str | os.PathLike] | None:
    """``path`` with ``$PJEPA_DATA`` / ``${PJEPA_DATA}`` replaced by that variable (the shipped presets'
    data location); a DataError saying what to set when it is used but unset."""
    if path is None or isinstance(path, (str, os.PathLike)):
        return None if path is None else _expand(path)
    return [_expand(p) for p in path]
