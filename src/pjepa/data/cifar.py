"""CIFAR-10 / CIFAR-100 from npz shards or the official python batches.

``path=None`` downloads the official tarball into the cache. A folder given as
``path`` that holds neither batches nor shards is an error naming what was
expected, never a download target, unless the option ``url`` asks for one.

Official python batches are pickles, and unpickling runs code named in the
file. They are read with ``SafeUnpickler``, which only rebuilds numpy arrays
(and a couple of harmless builtins) and refuses every other global, so a
tampered file raises DataError instead of executing anything.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pjepa.data.base import ImageDataset
from pjepa.data.decode import resize_uint8
from pjepa.data.download import cache_root, download, extract_tar
from pjepa.data.files import folder_summary
from pjepa.data.npz import PathArg, read_npz, resolve_shards
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

try:  # numpy >= 2 keeps the implementation in numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

#: The only globals a CIFAR pickle may name: what numpy needs to rebuild arrays.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer  # type: ignore[attr-defined]  # private

SPECS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "files": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "meta": ("batches.meta", b"label_names"),
        "label_key": b"labels",
        "num_classes": 10,
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "files": {"train": ["train"], "test": ["test"]},
        "meta": ("meta", b"fine_label_names"),
        "label_key": b"fine_labels",
        "num_classes": 100,
    },
}
SPLITS = ("train", "test")


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy globals listed in ``_ALLOWED``."""

    def __init__(self, file, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle global {module}.{name} from {self.source}: a CIFAR batch holds only "
                "numpy arrays; the file is not an official CIFAR batch (or was tampered with)"
            ) from None


def safe_unpickle(path: Path) -> Any:
    """Load a pickle file with SafeUnpickler; broken files raise DataError."""
    if not path.is_file():
        raise DataError(f"{path} is missing; expected the official CIFAR python batches in {path.parent}")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path).load()
    except DataError:
        raise  # a refused global, already named (DataError is a ValueError: keep it out of the clause below)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataError(f"cannot unpickle {path}: {err}; the file is corrupt — download it again") from err
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err


def _batch_arrays(batch: Any, path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels (N,) of one unpickled batch dict."""
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = list(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path} is not a CIFAR batch: expected keys b'data' and {label_key!r}, found {keys}")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise DataError(f"{path}: {label_key!r} must be a list of N integer labels, got {labels.dtype} {labels.shape}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{path}: b'data' must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
            f"and {len(labels)} labels"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64, copy=False)


def read_python_batches(folder: Path, split: str, name: str) -> ImageDataset:
    """Read ``split`` of the official python-batch folder of ``name``."""
    spec = SPECS[name]
    meta_file, meta_key = spec["meta"]
    meta = safe_unpickle(folder / meta_file)
    if not isinstance(meta, dict) or meta_key not in meta:
        raise DataError(f"{folder / meta_file} lacks {meta_key!r}; is this the {name} python version?")
    try:
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[meta_key]]
    except (UnicodeDecodeError, TypeError) as err:  # not a list, or names not UTF-8
        raise DataError(f"{folder / meta_file}: {meta_key!r} must be a list of class names: {err}") from None
    parts = [_batch_arrays(safe_unpickle(folder / f), folder / f, spec["label_key"]) for f in spec["files"][split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"labels in {folder} ({split}) fall outside [0, {len(class_names)}) class names")
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), class_names, name, split)


def _batch_folder(folder: Path, name: str) -> Path | None:
    """``folder`` or its official sub-folder when it holds the python batches."""
    spec = SPECS[name]
    for cand in (folder, folder / spec["folder"]):
        if (cand / spec["meta"][0]).is_file():
            return cand
    return None


def _download(name: str, folder: Path, url: str | None, md5: str | None) -> Path:
    """Download and unpack the official tarball into ``folder``; return the batch folder."""
    spec = SPECS[name]
    tarball = download(url or spec["url"], folder / f"{name}-python.tar.gz", md5=md5 or spec["md5"])
    extract_tar(tarball, folder)
    found = _batch_folder(folder, name)
    if found is None:
        raise DataError(f"{tarball} did not contain {spec['folder']}/{spec['meta'][0]}; delete it and retry")
    tarball.unlink()
    return found


def _not_cifar(folder: Path, name: str) -> str:
    """The error for a folder that holds neither the python batches of ``name`` nor npz shards."""
    spec = SPECS[name]
    files = ", ".join([spec["meta"][0], *spec["files"]["train"], *spec["files"]["test"]])
    return (f"data.path {folder} is not a {name} folder: expected the official python batches ({files}) in it "
            f"or in {folder / spec['folder']}, or npz shards; {folder_summary(folder)}. Point data.path at the "
            f"{spec['folder']} folder (or its parent) or an npz shard; or leave data.path unset (null) to download "
            f"{name} into {cache_root() / name}, or pass the option url=<tarball URL> to download into {folder}")


def _load(name: str, split: str, path: PathArg, image_size: int | None, url: str | None, md5: str | None) -> ImageDataset:
    if split not in SPLITS:
        raise DataError(f"{name} has splits {', '.join(SPLITS)}, got {split!r}")
    if path is None or (isinstance(path, (str, os.PathLike)) and Path(path).expanduser().is_dir()):
        folder = cache_root() / name if path is None else Path(path).expanduser()
        batches = _batch_folder(folder, name)
        if batches is None and not list(folder.glob("*.npz")):
            # A folder the user named is never filled behind their back: download only into the
            # cache (no path) or when the option url= asks for it.
            if path is not None and url is None:
                raise DataError(_not_cifar(folder, name))
            batches = _download(name, folder, url, md5)
        if batches is not None:
            return _resized(read_python_batches(batches, split, name), image_size)
    hint = f"{name} reads npz shards, the {SPECS[name]['folder']} folder (or its parent), or path=None to download"
    ds = read_npz(resolve_shards(path, name, hint=hint), split, name, image_size=image_size)
    if ds.num_classes != SPECS[name]["num_classes"]:
        raise DataError(f"{name} expects {SPECS[name]['num_classes']} classes but the shards hold {ds.num_classes}")
    return ds


def _resized(ds: ImageDataset, image_size: int | None) -> ImageDataset:
    assert isinstance(ds.images, torch.Tensor)  # the python batches are read into memory
    ds.images = resize_uint8(ds.images, image_size)
    return ds


@DATASETS.register("cifar10")
def load_cifar10(split: str, path: PathArg = None, *, image_size: int | None = None,
                 url: str | None = None, md5: str | None = None) -> ImageDataset:
    """CIFAR-10 (splits train/test). Options: image_size, url and md5 (download mirror)."""
    return _load("cifar10", split, path, image_size, url, md5)


@DATASETS.register("cifar100")
def load_cifar100(split: str, path: PathArg = None, *, image_size: int | None = None,
                  url: str | None = None, md5: str | None = None) -> ImageDataset:
    """CIFAR-100 with fine labels (splits train/test). Options: image_size, url and md5."""
    return _load("cifar100", split, path, image_size, url, md5)
