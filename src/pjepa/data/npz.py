"""Loader for npz shards of encoded images (the format in docs/data.md, "The npz shard format").

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
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from pjepa.data.base import ImageDataset, Images
from pjepa.data.decode import decode_images
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

PathArg = str | os.PathLike | Sequence[str | os.PathLike] | None
_REQUIRED = ("bytes", "offsets", "y")


@dataclass
class _Part:
    """One split of one shard (offsets and labels cast to int64 by ``_check_part``)."""

    path: Path
    data: np.ndarray  # uint8 (total_bytes,)
    offsets: np.ndarray  # int64 (N + 1,)
    labels: np.ndarray  # int64 (N,)
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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_FORMAT = ("an npz shard holds encoded images: {s}_bytes (uint8, the JPEG/PNG files concatenated), "
           "{s}_offsets (N+1 integer byte offsets) and {s}_y (N integer labels)")


def _not_npz(path: Path) -> str | None:
    """Why ``path`` is not an npz file (from its first bytes), or None when it may be one.

    Checked before ``np.load``, whose fallback for unknown files is pickle and whose
    message then advises ``allow_pickle=True``: the wrong advice for a data file.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        raise DataError(f"cannot read npz shard {path}: {err.strerror or err}") from err
    if head.startswith(_ZIP_MAGIC):
        return None
    if head.startswith(_NPY_MAGIC):
        return "it is a single .npy array, not an .npz archive of named arrays (write it with numpy.savez)"
    if not head:
        return "the file is empty"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed (a .tar.gz?): unpack it and pass the folder or the shard inside"
    return f"it does not start like a zip archive (first bytes {head!r}); numpy.savez writes a zip"


@contextmanager
def open_npz(path: Path) -> Iterator[Any]:
    """``np.load(path)`` as an open NpzFile (arrays only, no pickles); DataError naming ``path`` for
    anything that is not a readable npz archive."""
    why = _not_npz(path)
    if why is not None:
        raise DataError(f"{path} is not an npz shard: {why}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read npz shard {path}: {err}; the file is truncated or not written by "
                        "numpy.savez — re-create it") from err
    with z:
        yield z


def array(z: Any, key: str, path: Path) -> np.ndarray:
    """``z[key]``; members are read lazily, so a corrupt or pickled one fails here, named."""
    try:
        return z[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"cannot read npz shard {path}: array {key!r}: {err}; the shard is corrupt "
                        "or holds Python objects (only plain arrays are read) — re-create it") from err


def _names(value: np.ndarray | None, key: str, path: Path) -> list[str] | None:
    """A 1-D array of names as str (bytes decoded); a 0-d string would silently become its characters."""
    if value is None:
        return None
    if value.ndim != 1:
        raise DataError(f"{key} in {path} must be a 1-D array of names, got shape {value.shape}")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.tolist()]


def _read_part(path: Path, split: str) -> tuple[_Part | None, list[str], list[str]]:
    """Read ``split`` from one shard; (None, splits available, keys) when it has none."""
    with open_npz(path) as z:
        keys = list(z.files)
        splits = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith("_bytes")})
        present = [f"{split}_{k}" in keys for k in _REQUIRED]
        if not any(present):
            return None, splits, keys
        if not all(present):
            raise DataError(
                f"{path} lacks {', '.join(f'{split}_{k}' for k in _REQUIRED if f'{split}_{k}' not in keys)}; "
                f"keys found: {', '.join(keys)}; splits available: {', '.join(splits) or 'none'}"
            )
        files_key = f"{split}_files"
        part = _Part(
            path=path,
            data=array(z, f"{split}_bytes", path),
            offsets=array(z, f"{split}_offsets", path),
            labels=array(z, f"{split}_y", path),
            files=array(z, files_key, path) if files_key in keys else None,
            class_names=_names(array(z, "class_names", path), "class_names", path) if "class_names" in keys else None,
        )
    _check_part(part, split)
    return part, splits, keys


def _integers(a: np.ndarray, key: str, path: Path, what: str) -> np.ndarray:
    """``a`` as int64 when it is a 1-D integer array; else DataError (floats would be truncated silently,
    strings parsed)."""
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{key} in {path} must be a 1-D integer array ({what}), got {a.dtype} of shape {a.shape}; "
                        "re-create the shard with integer values")
    if a.dtype == np.uint64 and len(a) and a.max() > np.iinfo(np.int64).max:
        raise DataError(f"{key} in {path} holds values above 2**63 - 1; {what} must fit int64")
    return a.astype(np.int64, copy=False)


def _check_part(part: _Part, split: str) -> None:
    """Validate array types and shapes, and that offsets, labels and file names agree (offsets and
    labels are cast to int64 here, once checked)."""
    where = f"split {split!r} of {part.path}"
    if part.data.dtype != np.uint8 or part.data.ndim != 1:
        raise DataError(
            f"{split}_bytes in {part.path} must be uint8 (total_bytes,), got {part.data.dtype} {part.data.shape}; "
            + _FORMAT.format(s=split) + " — raw pixel arrays must be encoded to JPEG/PNG first"
        )
    part.labels = _integers(part.labels, f"{split}_y", part.path, "N class indices")
    part.offsets = off = _integers(part.offsets, f"{split}_offsets", part.path, "N+1 byte offsets")
    n = len(part.labels)
    if len(off) != n + 1:
        raise DataError(f"{where}: {split}_offsets has {len(off)} entries but {split}_y has {n} labels; "
                        "expected N+1 offsets (one per image plus the end)")
    if n and (off[0] < 0 or off[-1] > len(part.data) or np.any(np.diff(off) < 0)):
        raise DataError(f"{where}: {split}_offsets must rise from >= 0 to <= len({split}_bytes) = {len(part.data)}")
    if part.files is not None and (part.files.ndim != 1 or len(part.files) != n):
        raise DataError(f"{where}: {split}_files has shape {part.files.shape} but {split}_y has {n} labels; "
                        "expected one name per image")


def _class_names(parts: list[_Part], labels: np.ndarray, split: str) -> list[str]:
    """Class names shared by all shards (checked equal), else ``class_<i>``."""
    named = [(p, p.class_names) for p in parts if p.class_names is not None]
    for p, names in named[1:]:
        if names != named[0][1]:
            raise DataError(
                f"class_names differ between {named[0][0].path} ({len(named[0][1])} classes) and "
                f"{p.path} ({len(names)} classes); shards of one dataset must share class_names"
            )
    if named:
        names = named[0][1]
    else:
        names = [f"class_{i}" for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(
            f"labels of split {split!r} range over [{labels.min()}, {labels.max()}] but there are "
            f"{len(names)} class_names (in {named[0][0].path if named else 'no shard'}); the shard is inconsistent"
        )
    return names


def _gather(parts: list[_Part], keep: int | None) -> tuple[list[memoryview], list[str], np.ndarray]:
    """Per-image byte views, names and labels over all parts, keeping labels < keep."""
    blobs: list[memoryview] = []
    names: list[str] = []
    labels: list[np.ndarray] = []
    for p in parts:
        view = p.data.data  # the array's buffer as a memoryview
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
    parts, seen, any_split = [], {}, False
    for path in paths:
        part, splits, keys = _read_part(path, split)
        any_split |= bool(splits)
        # A shard with no split at all is likely another format (raw arrays): show its keys.
        seen[path] = ", ".join(splits) if splits else f"none (keys: {', '.join(keys) or 'none'})"
        if part is not None:
            parts.append(part)
    if not parts:
        avail = "; ".join(f"{p.name}: {s}" for p, s in seen.items())
        hint = "" if any_split else "; " + _FORMAT.format(s=split)
        raise DataError(f"no shard holds split {split!r} ({split}_bytes/_offsets/_y); splits available: {avail}{hint}")
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
    # still encoded only inside decode.deferred_decoding(), where the disk cache decodes them into its file
    return ImageDataset(cast(Images, images), torch.from_numpy(labels), class_names, name, split)


@DATASETS.register("npz")
def load_npz(split: str, path: PathArg = None, *, image_size: int | None = None) -> ImageDataset:
    """Generic npz shards. Options: ``image_size`` (resize to a square, needed when sizes differ)."""
    return read_npz(resolve_shards(path, "npz"), split, "npz", image_size=image_size)
