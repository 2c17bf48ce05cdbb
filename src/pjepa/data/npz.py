"""Loader for npz shards of encoded images (the format of ``shared/data``).

A shard holds, per split, ``{split}_bytes`` (the encoded files concatenated),
``{split}_offsets`` (N+1 byte offsets), ``{split}_y`` (N labels) and optionally
``{split}_files`` (N names), plus ``class_names``. A split may be spread over
several shards (``tin100_train_a``, ``tin100_train_b``): the loader reads any
list of shards and concatenates the split in the given (or sorted glob) order,
skipping shards that do not hold it. Arrays only: ``allow_pickle=False`` always.
"""

from __future__ import annotations

import glob
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pjepa.data.base import ImageDataset
from pjepa.data.decode import decode_images
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

PathArg = str | os.PathLike | Sequence[str | os.PathLike] | None
_REQUIRED = ("bytes", "offsets", "y")


@dataclass
class _Part:
    """One split of one shard, arrays as stored."""

    path: Path
    data: np.ndarray  # uint8 (total_bytes,)
    offsets: np.ndarray  # int64 (N + 1,)
    labels: np.ndarray  # int (N,)
    files: np.ndarray | None  # str (N,)
    class_names: list[str] | None


def _expand(item: str | os.PathLike, hint: str) -> list[Path]:
    """One path argument -> shard files: a file, a glob, or a folder of ``*.npz``."""
    text = os.path.expanduser(os.fspath(item))
    if any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(text))
        if not found:
            raise DataError(f"no file matches the glob {text!r}; check the pattern and folder")
        return found
    path = Path(text)
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if not found:
            raise DataError(f"folder {path} holds no *.npz shard; pass the shard files or a glob")
        return found
    if not path.is_file():
        raise DataError(
            f"{path} does not exist; check the path (relative paths start at {os.getcwd()}); {hint}"
        )
    return [path]


def resolve_shards(path: PathArg, dataset: str = "npz", hint: str | None = None) -> list[Path]:
    """Turn ``path`` (file, folder, glob, or a list of them) into shard files.

    ``hint`` ends the "does not exist" message (what else the dataset accepts).
    """
    hint = hint or f"dataset {dataset!r} reads an npz shard, a list of shards, a folder of shards or a glob"
    if path is None:
        raise DataError(f"dataset {dataset!r} needs path= (an npz shard, a list of shards or a glob)")
    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not items:
        raise DataError(f"dataset {dataset!r}: path= is an empty list; give at least one npz shard")
    return [shard for item in items for shard in _expand(item, hint)]


def _names(value: np.ndarray | None) -> list[str] | None:
    return None if value is None else [str(v) for v in value.tolist()]


def _read_part(path: Path, split: str) -> tuple[_Part | None, list[str]]:
    """Read ``split`` from one shard; (None, splits available) when it has none."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            splits = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith("_bytes")})
            present = [f"{split}_{k}" in keys for k in _REQUIRED]
            if not any(present):
                return None, splits
            if not all(present):
                raise DataError(
                    f"{path} lacks {', '.join(f'{split}_{k}' for k in _REQUIRED if f'{split}_{k}' not in keys)}; "
                    f"keys found: {', '.join(keys)}; splits available: {', '.join(splits) or 'none'}"
                )
            part = _Part(
                path=path,
                data=z[f"{split}_bytes"],
                offsets=z[f"{split}_offsets"].astype(np.int64),
                labels=z[f"{split}_y"].astype(np.int64),
                files=z[f"{split}_files"] if f"{split}_files" in keys else None,
                class_names=_names(z["class_names"]) if "class_names" in keys else None,
            )
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read npz shard {path}: {err}; is it a numpy .npz file of plain arrays?") from err
    _check_part(part, split)
    return part, splits


def _check_part(part: _Part, split: str) -> None:
    """Validate array types and that offsets, labels and file names agree."""
    off, n = part.offsets, len(part.labels)
    where = f"split {split!r} of {part.path}"
    if part.data.dtype != np.uint8 or part.data.ndim != 1:
        raise DataError(f"{split}_bytes in {part.path} must be uint8 (total_bytes,), got {part.data.dtype} {part.data.shape}")
    if off.ndim != 1 or len(off) != n + 1:
        raise DataError(f"{where}: {split}_offsets has {len(off)} entries but {split}_y has {n} labels; expected N+1 offsets")
    if n and (off[0] < 0 or off[-1] > len(part.data) or np.any(np.diff(off) < 0)):
        raise DataError(f"{where}: {split}_offsets must rise from >= 0 to <= len({split}_bytes) = {len(part.data)}")
    if part.files is not None and len(part.files) != n:
        raise DataError(f"{where}: {split}_files has {len(part.files)} names but {split}_y has {n} labels")


def _class_names(parts: list[_Part], labels: np.ndarray, split: str) -> list[str]:
    """Class names shared by all shards (checked equal), else ``class_<i>``."""
    named = [p for p in parts if p.class_names is not None]
    for p in named[1:]:
        if p.class_names != named[0].class_names:
            raise DataError(
                f"class_names differ between {named[0].path} ({len(named[0].class_names)} classes) and "
                f"{p.path} ({len(p.class_names)} classes); shards of one dataset must share class_names"
            )
    if named:
        names = named[0].class_names
    else:
        names = [f"class_{i}" for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(
            f"labels of split {split!r} range over [{labels.min()}, {labels.max()}] but there are "
            f"{len(names)} class_names (in {named[0].path if named else 'no shard'}); the shard is inconsistent"
        )
    return names


def _gather(parts: list[_Part], keep: int | None) -> tuple[list[memoryview], list[str], np.ndarray]:
    """Per-image byte views, names and labels over all parts, keeping labels < keep."""
    blobs: list[memoryview] = []
    names: list[str] = []
    labels: list[np.ndarray] = []
    for p in parts:
        view = memoryview(p.data)
        idx = np.arange(len(p.labels)) if keep is None else np.flatnonzero(p.labels < keep)
        starts, ends = p.offsets[idx].tolist(), p.offsets[idx + 1].tolist()
        blobs += [view[a:b] for a, b in zip(starts, ends)]
        files = p.files[idx].tolist() if p.files is not None else [f"#{i}" for i in idx.tolist()]
        names += [f"{p.path.name}:{f}" for f in files]
        labels.append(p.labels[idx])
    return blobs, names, np.concatenate(labels)


def read_npz(
    paths: Sequence[Path],
    split: str,
    name: str,
    image_size: int | None = None,
    keep_classes: int | None = None,
) -> ImageDataset:
    """Read and decode ``split`` from the shards ``paths`` into an ImageDataset.

    ``keep_classes=k`` keeps only labels < k (and the first k class names): how
    Tiny ImageNet-100 is cut from 200-class shards without decoding the rest.
    """
    parts, seen = [], {}
    for path in paths:
        part, splits = _read_part(path, split)
        seen[path] = splits
        if part is not None:
            parts.append(part)
    if not parts:
        avail = "; ".join(f"{p.name}: {', '.join(s) or 'none'}" for p, s in seen.items())
        raise DataError(f"no shard holds split {split!r} ({split}_bytes/_offsets/_y); splits available: {avail}")
    all_labels = np.concatenate([p.labels for p in parts])
    class_names = _class_names(parts, all_labels, split)
    if keep_classes is not None:
        if len(class_names) < keep_classes:
            raise DataError(
                f"dataset {name!r} needs {keep_classes} classes but the shards hold {len(class_names)} "
                f"({', '.join(p.name for p in paths)})"
            )
        class_names = class_names[:keep_classes]
    blobs, names, labels = _gather(parts, keep_classes)
    source = f"split {split!r} of {', '.join(str(p.path) for p in parts)}"
    if not blobs:
        raise DataError(f"{source} is empty (0 images); check the shard or the split name")
    images = decode_images(blobs, source=source, names=names, image_size=image_size)
    return ImageDataset(images, torch.from_numpy(labels), class_names, name, split)


@DATASETS.register("npz")
def load_npz(split: str, path: PathArg = None, *, image_size: int | None = None) -> ImageDataset:
    """Generic npz shards. Options: ``image_size`` (resize to a square, needed when sizes differ)."""
    return read_npz(resolve_shards(path, "npz"), split, "npz", image_size=image_size)
