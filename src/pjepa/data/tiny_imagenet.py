"""Tiny ImageNet-200 and its first-100-class subset, from any of three sources.

1. npz shards (``tin100_*_jpeg.npz``): delegated to the npz loader.
2. The original ``tiny-imagenet-200/`` folder (``wnids.txt``, ``words.txt``,
   ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val/val_annotations.txt``).
3. No data at hand (``path`` None; or a folder without data together with the
   option ``urls``): the Hugging Face ``zh-plus/tiny-imagenet`` parquet files are
   downloaded into the cache (or that folder), converted once to an npz shard
   there, and read from it. A folder named as ``path`` is never filled unasked.

Index files (``wnids.txt``, ``val_annotations.txt``) are data: an entry that
would reach outside the dataset folder (``../``, an absolute path) is refused.

Labels follow sorted WordNet ids, the label order of the HF dataset, so the
100-class subset is simply "label < 100" in every source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pjepa.atomic import atomic_path
from pjepa.data.base import ImageDataset
from pjepa.data.download import cache_root, download
from pjepa.data.files import folder_summary, inside, read_text
from pjepa.data.imagefolder import IMAGE_EXTENSIONS, read_files
from pjepa.data.npz import PathArg, open_npz, read_npz, resolve_shards
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

_HF = "https://huggingface.co/datasets/zh-plus/tiny-imagenet/resolve/main/data/"
#: Parquet files of the HF dataset, by our split name (HF calls val "valid").
HF_URLS: dict[str, str] = {
    "train": _HF + "train-00000-of-00001-1359597a978bc4fa.parquet",
    "val": _HF + "valid-00000-of-00001-70d52db3c749a935.parquet",
}
#: Environment variables that override HF_URLS (e.g. a file:// mirror).
URL_ENV: dict[str, str] = {"train": "PJEPA_TINY_IMAGENET_TRAIN_URL", "val": "PJEPA_TINY_IMAGENET_VAL_URL"}
SPLITS = ("train", "val")
NUM_CLASSES_FULL = 200
_PATH_HINT = ("tiny-imagenet reads npz shards (file, list or glob), the tiny-imagenet-200/ folder, or an existing "
              "cache folder (downloaded into only with the option urls=); path=None downloads into ~/.cache/pjepa")


def cache_file(folder: Path, split: str) -> Path:
    """Name of the converted npz shard of ``split`` inside a cache folder."""
    return folder / f"tiny-imagenet-200_{split}_jpeg.npz"


# ---------------------------------------------------------------- HF parquet


def _pyarrow_parquet():
    """Import pyarrow.parquet lazily: only the download path needs it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError("reading the Hugging Face parquet files needs pyarrow: pip install pyarrow") from err
    return pq


def _hf_label_names(schema) -> list[str] | None:
    """ClassLabel names stored by `datasets` in the parquet schema metadata, if any."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        names = json.loads(raw)["info"]["features"]["label"]["names"] if raw else None
    except (ValueError, KeyError, TypeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _image_bytes(column) -> list[bytes]:
    """Encoded images of an `image` column: struct {bytes, path} or plain binary."""
    if hasattr(column.type, "get_field_index") and column.type.get_field_index("bytes") >= 0:
        column = column.field("bytes")
    return column.to_pylist()


def parquet_to_npz(parquet: Path, out: Path, split: str, num_classes: int = NUM_CLASSES_FULL) -> Path:
    """Convert an HF image parquet (``image``, ``label`` columns) to an npz shard.

    Writes ``{split}_bytes/_offsets/_y/_files``, ``class_names`` and ``wnids``
    (the schema's ClassLabel names, else ``class_<i>``) to a temporary file and
    renames it onto ``out``.
    """
    pq = _pyarrow_parquet()
    try:
        pf = pq.ParquetFile(parquet)
        columns = pf.schema_arrow.names
        if "image" not in columns or "label" not in columns:
            raise DataError(f"{parquet} has columns {columns}; expected 'image' and 'label'")
        blobs, labels = [], []
        for batch in pf.iter_batches(batch_size=4096, columns=["image", "label"]):
            blobs += _image_bytes(batch.column("image"))
            labels += batch.column("label").to_pylist()
        names = _hf_label_names(pf.schema_arrow)
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read parquet {parquet}: {err}; delete it to download it again") from err
    if any(b is None for b in blobs) or any(y is None for y in labels):
        raise DataError(f"{parquet} has rows without image bytes or label")
    y = np.asarray(labels, dtype=np.int64)
    if names is None:
        names = [f"class_{i}" for i in range(max(num_classes, int(y.max()) + 1 if len(y) else 0))]
    lengths = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    arrays: dict[str, np.ndarray] = {
        f"{split}_bytes": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        f"{split}_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        f"{split}_y": y.astype(np.int16),
        f"{split}_files": np.asarray([f"{split}_{i}.JPEG" for i in range(len(y))]),
        "class_names": np.asarray(names),
        "wnids": np.asarray(names),
    }
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a name
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stubs match **kwds against allow_pickle
    return out


def _url(split: str, urls: Mapping[str, str] | None) -> str:
    if urls is not None:
        if split not in urls:
            raise DataError(f"option urls has no entry for split {split!r}; give {{'{split}': 'https://...'}}")
        return urls[split]
    return os.environ.get(URL_ENV[split]) or HF_URLS[split]


def fetch_hf(folder: Path, split: str, urls: Mapping[str, str] | None = None) -> Path:
    """The cached npz shard of ``split`` in ``folder``, downloading/converting it once."""
    out = cache_file(folder, split)
    if out.is_file():
        return out
    _pyarrow_parquet()  # fail before a long download
    parquet = download(_url(split, urls), folder / f"{split}.parquet")
    parquet_to_npz(parquet, out, split)
    parquet.unlink()  # the npz holds the same bytes
    return out


# ---------------------------------------------------------- original folder


def find_folder_layout(folder: Path) -> Path | None:
    """``folder`` or ``folder/tiny-imagenet-200`` when it holds ``wnids.txt``."""
    for root in (folder, folder / "tiny-imagenet-200"):
        if (root / "wnids.txt").is_file():
            return root
    return None


def _class_names(root: Path, wnids: list[str]) -> list[str]:
    """First synonym of each wnid from ``words.txt`` (the wnid itself when absent)."""
    words: dict[str, str] = {}
    if (root / "words.txt").is_file():
        for line in read_text(root / "words.txt", "Tiny ImageNet class-name file").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return [words.get(w) or w for w in wnids]


def _val_files(root: Path, index: dict[str, int]) -> tuple[list[Path], list[int]]:
    """Val images and labels from ``val_annotations.txt``, grouped by class."""
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"{ann} is missing; the tiny-imagenet-200 val split needs it for labels")
    images = root / "val" / "images"
    rows = []
    for n, line in enumerate(read_text(ann, "Tiny ImageNet val index").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{ann} line {n}: expected '<file>\\t<wnid>...', got {line!r}")
        if fields[1] in index:
            rows.append((index[fields[1]], inside(images, fields[0], f"{ann} line {n}")))
    rows.sort()
    return [f for _, f in rows], [y for y, _ in rows]


def _train_files(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataError(f"{folder} is missing; expected train/<wnid>/images/*.JPEG for every wnid in wnids.txt")
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:  # a class without images would still count as a class: refuse, like imagefolder
            raise DataError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            f"{folder_summary(folder)}; add its images or remove {wnid} from wnids.txt")
        files += found
        labels += [label] * len(found)
    return files, labels


def read_folder_layout(root: Path, split: str, num_classes: int, name: str, image_size: int | None) -> ImageDataset:
    """Read a split of the original folder; labels = index in sorted wnids."""
    wnids = sorted(w.strip() for w in read_text(root / "wnids.txt", "Tiny ImageNet class list").split() if w.strip())
    for w in wnids:  # each wnid names a folder train/<wnid>: a plain name, nothing that climbs out
        if w in (".", "..") or any(c in w for c in "/\\:"):
            raise DataError(f"{root / 'wnids.txt'} entry {w!r} is not a WordNet id (like n01443537): class ids "
                            "name folders under train/ and may not hold '/', '\\', ':' or be '..' — fix the file")
    duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
    if duplicates:
        raise DataError(f"{root / 'wnids.txt'} lists {', '.join(duplicates[:5])} more than once; each class once")
    if len(wnids) < num_classes:
        raise DataError(f"{root / 'wnids.txt'} lists {len(wnids)} classes; {name} needs {num_classes}")
    wnids = wnids[:num_classes]
    if split == "train":
        files, labels = _train_files(root, wnids)
    else:
        files, labels = _val_files(root, {w: i for i, w in enumerate(wnids)})
    if not files:
        raise DataError(f"no {split} images found under {root}")
    return read_files(files, labels, _class_names(root, wnids), name, split, f"{root} ({split})", image_size)


# ------------------------------------------------------------------ loaders


def _shards_with_split(folder: Path, split: str) -> list[Path]:
    """The ``*.npz`` files in ``folder`` that hold ``split``."""
    found = []
    for shard in sorted(folder.glob("*.npz")):
        with open_npz(shard) as z:
            if f"{split}_bytes" in z.files:
                found.append(shard)
    return found


def _load(name: str, num_classes: int, split: str, path: PathArg, image_size: int | None,
          urls: Mapping[str, str] | None) -> ImageDataset:
    if split not in SPLITS:
        raise DataError(f"{name} has splits {', '.join(SPLITS)} (test labels are not public), got {split!r}")
    keep = num_classes if num_classes < NUM_CLASSES_FULL else None
    if path is None or (isinstance(path, (str, os.PathLike)) and Path(path).expanduser().is_dir()):
        folder = cache_root() / "tiny-imagenet" if path is None else Path(path).expanduser()
        root = find_folder_layout(folder)
        if root is not None:
            return read_folder_layout(root, split, num_classes, name, image_size)
        shards = [cache_file(folder, split)] if cache_file(folder, split).is_file() else _shards_with_split(folder, split)
        if not shards:
            # The cache (no path) is filled on demand; a folder the user named only when urls= asks for it.
            if path is not None and urls is None:
                raise DataError(
                    f"data.path {folder} holds no {name} data for split {split!r}: expected the tiny-imagenet-200/ "
                    f"folder (wnids.txt, train/, val/) or npz shards holding {split}_bytes; {folder_summary(folder)}. "
                    f"Point data.path at the data; or leave data.path unset (null) to download into "
                    f"{cache_root() / 'tiny-imagenet'}, or pass the option urls={{'{split}': '<parquet URL>'}} to "
                    f"download into {folder}")
            shards = [fetch_hf(folder, split, urls)]
    else:
        shards = resolve_shards(path, name, hint=_PATH_HINT)
    ds = read_npz(shards, split, name, image_size=image_size, keep_classes=keep)
    if keep is None and ds.num_classes != NUM_CLASSES_FULL:
        raise DataError(f"{name} expects {NUM_CLASSES_FULL} classes but the shards hold {ds.num_classes}; "
                        "use tiny-imagenet-100 for 100-class shards")
    return ds


@DATASETS.register("tiny-imagenet-100")
def load_tiny_imagenet_100(split: str, path: PathArg = None, *, image_size: int | None = None,
                           urls: Mapping[str, str] | None = None) -> ImageDataset:
    """Tiny ImageNet, first 100 classes (sorted wnids). Splits train/val. Options: image_size, urls."""
    return _load("tiny-imagenet-100", 100, split, path, image_size, urls)


@DATASETS.register("tiny-imagenet-200")
def load_tiny_imagenet_200(split: str, path: PathArg = None, *, image_size: int | None = None,
                           urls: Mapping[str, str] | None = None) -> ImageDataset:
    """Tiny ImageNet, all 200 classes. Splits train/val. Options: image_size, urls."""
    return _load("tiny-imagenet-200", NUM_CLASSES_FULL, split, path, image_size, urls)
