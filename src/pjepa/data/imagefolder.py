"""Loader for a folder of class folders: ``root/<class>/**/*.jpg``.

Classes are the sorted sub-folder names (label = index), so every split of one
root gets the same labels. ``root/<split>`` is used when it exists (``train/``,
``val/``), else ``root`` itself is the split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch

from pjepa.data.base import ImageDataset, Images
from pjepa.data.decode import EncodedImages, decode_images, decoded, decoding_deferred
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted, by extension (any case)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image file {path}: {err}") from err


def read_files(files: Sequence[Path], labels: Sequence[int], class_names: list[str], name: str, split: str,
               source: str, image_size: int | None) -> ImageDataset:
    """Read and decode image files into an ImageDataset (shared with tiny-imagenet).

    In memory every file is read first, then decoded; for a disk cache (``deferred_decoding``) each file is
    read when its image is decoded, so the encoded bytes of a large folder are never all in memory either.
    """
    names = [str(f) for f in files]
    if decoding_deferred():
        files = list(files)
        images = decoded(EncodedImages(len(files), lambda i: _read_file(files[i]), source, names, image_size))
    else:
        blobs = [_read_file(f) for f in files]
        images = decode_images(blobs, source=source, names=names, image_size=image_size)
    # still encoded only inside decode.deferred_decoding(), where the disk cache decodes them into its file
    return ImageDataset(cast(Images, images), torch.tensor(list(labels), dtype=torch.int64), class_names, name, split)


@DATASETS.register("imagefolder")
def load_imagefolder(split: str, path: str | os.PathLike | None = None, *, image_size: int | None = None) -> ImageDataset:
    """Class-folder images. Options: ``image_size`` (resize to a square; required when sizes differ)."""
    if path is None:
        raise DataError("dataset 'imagefolder' needs path= (a folder of class folders)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder root {root} is not a folder; pass a folder holding one sub-folder per class")
    folder = root / split if (root / split).is_dir() else root
    try:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    except OSError as err:
        raise DataError(f"cannot list imagefolder {folder}: {err.strerror or err}") from err
    if not classes:
        raise DataError(f"{folder} has no class sub-folders; expected {folder}/<class>/<image>.jpg")
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    files, labels, empty = [], [], []
    for label, cls in enumerate(classes):
        found = list_images(folder / cls)
        if not found:
            empty.append(cls)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"no images ({exts}) in the class folders of {folder}; expected {folder}/<class>/<image>.jpg")
    if empty:
        # An empty class folder would still be a class (it shifts num_classes and the probes'
        # chance level) with no example: most likely a copy that went wrong, so say so.
        shown = ", ".join(str(folder / c) for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataError(f"class folder(s) {shown} hold no images ({exts}); add the images or remove the folder(s)")
    return read_files(files, labels, classes, "imagefolder", split, str(folder), image_size)
