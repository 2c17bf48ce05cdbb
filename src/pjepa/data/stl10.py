"""STL-10 from the official binary release (``stl10_binary/``).

``{split}_X.bin`` holds uint8 images of 3x96x96, each channel stored
column-major (Matlab order); ``{split}_y.bin`` holds labels 1..10. The files are
memory-mapped so ``limit`` reads only the first images of the 100k-image
``unlabeled`` split (about 2.8 GB in full).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pjepa.data.base import ImageDataset
from pjepa.data.decode import resize_uint8
from pjepa.data.download import cache_root, download, extract_tar
from pjepa.data.files import folder_summary, read_text
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
FOLDER = "stl10_binary"
SPLITS = ("train", "test", "unlabeled")
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
DEFAULT_CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _find_folder(folder: Path) -> Path | None:
    """``folder`` or ``folder/stl10_binary`` when it holds ``train_X.bin``."""
    for cand in (folder, folder / FOLDER):
        if (cand / "train_X.bin").is_file() or (cand / "unlabeled_X.bin").is_file():
            return cand
    return None


def _class_names(folder: Path) -> list[str]:
    path = folder / "class_names.txt"
    if not path.is_file():
        return list(DEFAULT_CLASS_NAMES)
    names = [line.strip() for line in read_text(path, "STL-10 class-name file").splitlines() if line.strip()]
    if len(names) != 10:
        raise DataError(f"{path} lists {len(names)} class names; STL-10 has 10")
    return names


def read_images(path: Path, limit: int | None) -> torch.Tensor:
    """uint8 (N, 3, 96, 96) from an ``*_X.bin`` file, first ``limit`` images only."""
    if not path.is_file():
        raise DataError(f"{path} is missing; expected the official stl10_binary files")
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataError(f"{path} has {size} bytes, not a multiple of {IMAGE_BYTES} (3x96x96); the file is truncated")
    n = size // IMAGE_BYTES if limit is None else min(limit, size // IMAGE_BYTES)
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, SIDE, SIDE))  # (N, 3, W, H): column-major
    images = np.ascontiguousarray(raw.transpose(0, 1, 3, 2))  # (N, 3, H, W)
    del raw
    return torch.from_numpy(images)


def read_labels(path: Path, n: int) -> torch.Tensor:
    """int64 (n,) labels 0..9 from a ``*_y.bin`` file (stored as 1..10)."""
    if not path.is_file():
        raise DataError(f"{path} is missing; expected the official stl10_binary files")
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(y) < n:
        raise DataError(f"{path} has {len(y)} labels for {n} images")
    y = y[:n]
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path} holds labels outside 1..10")
    return torch.from_numpy(y)


def read_stl10(folder: Path, split: str, limit: int | None = None) -> ImageDataset:
    """Read ``split`` from an ``stl10_binary`` folder; ``unlabeled`` gets labels -1."""
    images = read_images(folder / f"{split}_X.bin", limit)
    if split == "unlabeled":
        labels = torch.full((len(images),), -1, dtype=torch.int64)
    else:
        labels = read_labels(folder / f"{split}_y.bin", len(images))
    return ImageDataset(images, labels, _class_names(folder), "stl10", split)


@DATASETS.register("stl10")
def load_stl10(split: str, path: str | os.PathLike | None = None, *, limit: int | None = None,
               image_size: int | None = None, url: str | None = None, md5: str | None = None) -> ImageDataset:
    """STL-10 binary (splits train/test/unlabeled). Options: limit, image_size, url, md5.

    ``path`` is the ``stl10_binary`` folder or its parent; None downloads the
    official tarball (2.6 GB) into the cache. A folder without the files is an
    error, not a download target, unless ``url`` is given.
    """
    if split not in SPLITS:
        raise DataError(f"stl10 has splits {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise DataError(f"option limit must be a positive int, got {limit!r}")
    folder = cache_root() / "stl10" if path is None else Path(path).expanduser()
    found = _find_folder(folder)
    if found is None:
        if path is not None and not folder.is_dir():
            raise DataError(f"stl10 path {folder} does not exist; pass the stl10_binary folder or its parent")
        if path is not None and url is None:  # never fill a folder the user named unless url= asks for it
            raise DataError(
                f"data.path {folder} is not an STL-10 folder: expected train_X.bin (or unlabeled_X.bin) in it or in "
                f"{folder / FOLDER}; {folder_summary(folder)}. Point data.path at the {FOLDER} folder (or its "
                f"parent); or leave data.path unset (null) to download STL-10 (2.6 GB) into {cache_root() / 'stl10'}, "
                f"or pass the option url=<tarball URL> to download into {folder}"
            )
        tarball = download(url or URL, folder / "stl10_binary.tar.gz", md5=md5 or MD5)
        extract_tar(tarball, folder)
        found = _find_folder(folder)
        if found is None:
            raise DataError(f"{tarball} did not contain {FOLDER}/train_X.bin; delete it and retry")
        tarball.unlink()
    ds = read_stl10(found, split, limit)
    assert isinstance(ds.images, torch.Tensor)  # the binary files are read into memory
    ds.images = resize_uint8(ds.images, image_size)
    return ds
