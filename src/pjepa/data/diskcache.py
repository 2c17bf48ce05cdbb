"""``data.cache: disk``: a split decoded once into a file, then read row by row (``DiskImages``).

A decoded split is ``N * 3 * H * W`` bytes: 0.6 GB for Tiny ImageNet-100 at 64 px, about 20 GB for
ImageNet-100 at 224 px, held once per DDP rank when it lives in memory. On disk it is decoded once
into a cache folder and every process reads the rows of its own batches from there.

The folder, ``<cache_dir>/<dataset>_<split>_<key>/``, holds

- ``images.npy``: uint8 (N, 3, H, W), a plain ``.npy`` (``numpy.load(path, mmap_mode="r")`` maps it);
- ``labels.npy``: int64 (N,);
- ``manifest.json``: format, the source key, shape, dtype, class names, the chunk size, the CRC-32 of
  every chunk of rows written so far, the labels' CRC-32, ``complete``, and a SHA-256 of all that.

The key is a hash of the dataset name, split, loader options (``image_size`` ...), the Pillow version
(decoders may differ between versions) and every source file's path, size and modification time
(a folder: every file under it), so a changed source gets a new folder. ``data.path=null``
(generated or downloaded data) is keyed by name, split and options alone.

Building: the loader runs inside ``deferred_decoding()``, so loaders of encoded images (npz shards,
image folders, Tiny ImageNet) hand back their ``EncodedImages`` undecoded; chunks of rows are decoded
by a thread pool into per-chunk buffers and written at their place in the preallocated file, so
neither the decoded split nor (for folders) its encoded files are ever all in memory. Loaders of raw
arrays (CIFAR batches, STL-10, synthetic) return a tensor, which is written in chunks. After each
chunk the manifest records it; a build that is killed resumes at the next run: the chunks recorded
are checked against their CRC-32 and kept, the rest are decoded. The whole build runs under an
exclusive lock (``fcntl.flock`` on ``<cache_dir>/.locks/<folder>.lock``): of several processes (DDP
ranks) asking at once, one builds while the others wait, then all of them read the finished file.

Opening is cheap and checked: the manifest's checksum, ``complete``, the key, the ``.npy`` header
and file sizes, the labels' CRC and the CRC of the last chunk. Anything wrong is a DataError naming
the folder and saying to delete it (the next run rebuilds it); ``verify`` checks every chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import PIL
import torch
from tqdm import tqdm

from pjepa.atomic import atomic_write_text
from pjepa.data.base import ImageDataset
from pjepa.data.decode import PROGRESS_MIN, EncodedImages, deferred_decoding
from pjepa.data.diskimages import DiskImages
from pjepa.data.download import cache_root
from pjepa.errors import DataError

try:
    import fcntl
except ImportError:  # not POSIX: builds are not locked against each other
    fcntl = None  # type: ignore[assignment]

FORMAT = "pjepa-decoded-images"
VERSION = 1
#: Rows per chunk: about this many bytes (a chunk is the unit of decoding, writing, resuming and checking).
CHUNK_BYTES = 32 << 20
#: At most this many decoding threads by default.
MAX_WORKERS = 16

PathArg = str | os.PathLike | Sequence[str | os.PathLike] | None


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def default_cache_dir() -> Path:
    """``$PJEPA_CACHE/decoded`` (default ``~/.cache/pjepa/decoded``)."""
    return cache_root() / "decoded"


def default_workers() -> int:
    """Decoding threads: one per CPU core this process may use, at most ``MAX_WORKERS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS))


# ------------------------------------------------------------------------------------------ the key


def _stamp_file(digest: Any, path: Path) -> None:
    st = path.stat()
    digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def _stamp(path: PathArg, skip: Path) -> dict[str, Any] | None:
    """Paths given and a digest of (path, size, mtime) of every file they name (folders walked, ``skip``
    and its contents left out); None for ``path=None``."""
    if path is None:
        return None
    import glob

    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    digest, count, given = hashlib.sha256(), 0, []
    skip = skip.resolve()
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        given.append(os.path.abspath(text))
        matches = sorted(glob.glob(text)) if any(c in text for c in "*?[") else [text]
        for match in matches:
            p = Path(match).resolve() if Path(match).exists() else Path(os.path.abspath(match))
            if p.is_dir():
                for root, dirs, files in os.walk(p):
                    dirs[:] = sorted(d for d in dirs if Path(root, d).resolve() != skip)
                    for f in sorted(files):
                        _stamp_file(digest, Path(root, f))
                        count += 1
            elif p.is_file():
                _stamp_file(digest, p)
                count += 1
            else:  # missing: the loader names the problem when it runs
                digest.update(f"{p}\0missing\n".encode())
    return {"paths": given, "files": count, "digest": digest.hexdigest()}


def source_key(name: str, split: str, path: PathArg, options: Mapping[str, Any], skip: Path) -> dict[str, Any]:
    """What a decoded split depends on; its hash names the cache folder."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "dataset": name,
        "split": split,
        "options": json.loads(json.dumps(dict(options), sort_keys=True, default=str)),
        "sources": _stamp(path, skip),
        "pillow": PIL.__version__,
    }


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cache_folder(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<dataset>_<split>_<first 16 hex digits of the key's hash>``."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9.-]+", "-", s).strip("-") or "x"  # noqa: E731
    return cache_dir / f"{safe(key['dataset'])}_{safe(key['split'])}_{_hash(key)[:16]}"


# ------------------------------------------------------------------------------------------ files


def _damaged(folder: Path, why: str) -> DataError:
    return DataError(f"the decoded-image cache {folder} is damaged: {why}; delete the folder {folder} (the next "
                     "run with data.cache=disk rebuilds it) or set data.cache=memory")


def _sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return {**body, "checksum": _hash(body)}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (sealed with its checksum) atomically: a temporary file renamed onto it."""
    atomic_write_text(folder / "manifest.json", json.dumps(_sealed(manifest), indent=1) + "\n")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` (None when there is none); a DataError when it is not one of ours or its
    checksum does not match."""
    path = folder / "manifest.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _damaged(folder, f"manifest.json cannot be read ({err.strerror or err})") from err
    try:
        manifest = json.loads(text)
    except ValueError:
        raise _damaged(folder, "manifest.json is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _damaged(folder, f"manifest.json is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise _damaged(folder, f"manifest.json has version {manifest.get('version')!r}, this pjepa reads {VERSION}")
    if _sealed(manifest).get("checksum") != manifest.get("checksum"):
        raise _damaged(folder, "manifest.json does not match its checksum (edited or partly written)")
    return manifest


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a ``.npy`` header."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fortran:
            raise ValueError("Fortran order")
        return tuple(shape), dtype, fh.tell()


def _create_npy(path: Path, shape: tuple[int, ...]) -> int:
    """A uint8 ``.npy`` of ``shape`` with its data not written yet (a sparse file); returns the data offset."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
        offset = fh.tell()
        fh.truncate(offset + int(np.prod(shape)))
    return offset


def _crc(buf: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(buf).reshape(-1).data)


def _write_at(fd: int, data: np.ndarray, offset: int, path: Path) -> None:
    """All of ``data`` at byte ``offset`` of ``fd``."""
    view = np.ascontiguousarray(data).reshape(-1).data.cast("B")
    try:
        while len(view):
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done
    except OSError as err:
        raise DataError(f"cannot write the decoded-image cache {path}: {err.strerror or err}; free some space or "
                        "set data.cache_dir to a folder on a larger disk") from err


# ------------------------------------------------------------------------------------------ opening


def _chunks(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]


def open_cache(folder: Path, key_hash: str | None = None) -> ImageDataset | None:
    """The complete cache in ``folder`` as an ImageDataset whose images are ``DiskImages``; None when it is
    absent or not finished. The cheap checks (module docstring) raise a DataError when it is damaged or
    belongs to other data (``key_hash`` given)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    if key_hash is not None and manifest.get("key_hash") != key_hash:
        key = manifest.get("key", {})
        raise _damaged(folder, f"it holds split {key.get('split')!r} of {key.get('dataset')!r} from other sources "
                               "(or another pjepa or Pillow version) than the ones asked for")
    if not manifest.get("complete"):
        return None
    shape = tuple(manifest["shape"])
    images_path, labels_path = folder / "images.npy", folder / "labels.npy"
    try:
        file_shape, dtype, offset = _npy_header(images_path)
    except FileNotFoundError:
        raise _damaged(folder, "images.npy is missing") from None
    except (OSError, ValueError) as err:
        raise _damaged(folder, f"images.npy has no valid .npy header ({err})") from None
    if file_shape != shape or dtype != np.uint8:
        raise _damaged(folder, f"images.npy holds {dtype} {file_shape}, the manifest says uint8 {shape}")
    expected = offset + int(np.prod(shape))
    size = images_path.stat().st_size
    if size != expected:
        raise _damaged(folder, f"images.npy has {size} bytes, expected {expected} (truncated or overwritten)")
    try:
        labels = np.load(labels_path, allow_pickle=False)
    except FileNotFoundError:
        raise _damaged(folder, "labels.npy is missing") from None
    except (OSError, ValueError, EOFError) as err:
        raise _damaged(folder, f"labels.npy cannot be read ({err})") from None
    if labels.dtype != np.int64 or labels.shape != (shape[0],) or _crc(labels) != manifest["labels_crc"]:
        raise _damaged(folder, "labels.npy does not match the manifest")
    images = DiskImages(images_path, shape, offset)
    chunks = _chunks(shape[0], manifest["chunk_rows"])
    a, b = chunks[-1]  # a spot check that costs one chunk; ``verify`` reads them all
    if _crc(images[a:b].numpy()) != manifest["chunks"][-1]:
        raise _damaged(folder, f"rows {a}..{b - 1} of images.npy do not match their checksum")
    return ImageDataset(images, torch.from_numpy(labels), list(manifest["class_names"]), manifest["name"],
                        manifest["split"])


def verify(folder: str | os.PathLike) -> int:
    """Read every chunk of the cache in ``folder`` and check its CRC-32; returns the number of images.
    A DataError names the first bad chunk (or whatever ``open_cache`` finds wrong)."""
    folder = Path(folder)
    ds = open_cache(folder)
    if ds is None:
        raise DataError(f"{folder} holds no finished decoded-image cache")
    manifest = read_manifest(folder)
    assert manifest is not None
    for (a, b), crc in zip(_chunks(len(ds), manifest["chunk_rows"]), manifest["chunks"]):
        if _crc(ds.images[a:b].numpy()) != crc:
            raise _damaged(folder, f"rows {a}..{b - 1} of images.npy do not match their checksum")
    return len(ds)


# ------------------------------------------------------------------------------------------ building


@contextmanager
def build_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """Hold the exclusive lock of cache folder ``name``; says so once when another process holds it."""
    locks = cache_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "a+b") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"[pjepa] waiting for another process to build the decoded-image cache {cache_dir / name}",
                      flush=True)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_source(images: Any, where: str) -> tuple[int, int, int]:
    """(N, H, W) of what a loader returned: EncodedImages or uint8 (N, 3, H, W)."""
    if isinstance(images, EncodedImages):
        h, w = images.frame()
        return len(images), h, w
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3:
        return int(images.shape[0]), int(images.shape[2]), int(images.shape[3])
    raise TypeError(f"{where}: a loader returned images of type {type(images).__name__}; expected EncodedImages "
                    "or a uint8 (N, 3, H, W) tensor")


def _resumable(folder: Path, manifest: dict[str, Any] | None, shape: tuple[int, ...]) -> dict[int, int]:
    """The chunks (index -> CRC) of an unfinished build of the same shape whose bytes still match; {} when
    there is nothing to resume."""
    if manifest is None or manifest.get("complete") or tuple(manifest.get("shape", ())) != shape:
        return {}
    path = folder / "images.npy"
    try:
        file_shape, _, offset = _npy_header(path)
        if file_shape != shape or path.stat().st_size != offset + int(np.prod(shape)):
            return {}
    except (OSError, ValueError):
        return {}
    images = DiskImages(path, shape, offset)
    chunks = _chunks(shape[0], manifest["chunk_rows"])
    done = {int(i): int(crc) for i, crc in manifest.get("done", {}).items()}
    kept = {i: crc for i, crc in done.items() if i < len(chunks) and _crc(images[slice(*chunks[i])].numpy()) == crc}
    images.close()
    return kept


def build(folder: Path, key: dict[str, Any], load: Callable[[], ImageDataset], workers: int | None = None,
          chunk_rows: int | None = None, progress: bool | None = None) -> None:
    """Decode the split ``load()`` returns into ``folder`` (resuming an unfinished build there). Call it
    under ``build_lock``."""
    with deferred_decoding():
        ds = load()
    n, h, w = _check_source(ds.images, str(folder))
    shape = (n, 3, h, w)
    row_bytes = 3 * h * w
    old = read_manifest(folder)
    done = _resumable(folder, old, shape)
    if done:
        chunk_rows = int(old["chunk_rows"])  # type: ignore[index]
    else:
        chunk_rows = chunk_rows or max(1, CHUNK_BYTES // row_bytes)
    chunks = _chunks(n, chunk_rows)
    labels = ds.labels.numpy().astype(np.int64, copy=False)
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "key": key, "key_hash": _hash(key), "name": ds.name, "split": ds.split,
        "shape": list(shape), "dtype": "uint8", "class_names": list(ds.class_names), "chunk_rows": chunk_rows,
        "labels_crc": _crc(labels), "complete": False, "done": {str(i): c for i, c in sorted(done.items())},
    }
    images_path = folder / "images.npy"
    if not done:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < n * row_bytes:
            raise DataError(f"the decoded {ds.name} {ds.split} split needs {_size(n * row_bytes)} but {folder} "
                            f"has {_size(free)} free; set data.cache_dir to a larger disk or data.cache=memory")
        write_manifest(folder, manifest)  # before the file: a build killed from here on resumes or restarts
        _create_npy(images_path, shape)
    np.save(folder / "labels.npy", labels)
    _, _, offset = _npy_header(images_path)
    todo = [i for i in range(len(chunks)) if i not in done]
    # a deferred loader (decode.deferred_decoding) hands over its images still encoded
    source = cast("torch.Tensor | EncodedImages", ds.images)
    encoded = isinstance(source, EncodedImages)
    workers = (workers or default_workers()) if encoded else 1
    action = "resuming" if done else "building"
    print(f"[pjepa] {action} the decoded-image cache of {ds.name} {ds.split} ({n} images, {_size(n * row_bytes)}) "
          f"in {folder}" + (f": {len(done)} of {len(chunks)} chunks done" if done else "")
          + (f", {workers} decoding threads" if encoded else ""), flush=True)
    fd = os.open(images_path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    bar = tqdm(total=n, initial=sum(b - a for i, (a, b) in enumerate(chunks) if i in done), unit="img",
               desc=f"cache {ds.name} {ds.split}"[:40], disable=(not progress) if progress is not None
               else (True if n <= PROGRESS_MIN else None))

    def write_chunk(i: int) -> int:
        a, b = chunks[i]
        if isinstance(source, EncodedImages):
            buf = np.empty((b - a, 3, h, w), dtype=np.uint8)
            source.decode_into(buf, a)
        else:
            buf = source[a:b].numpy()
        _write_at(fd, buf, offset + a * row_bytes, images_path)
        return _crc(buf)

    def record(i: int, crc: int) -> None:
        done[i] = crc
        manifest["done"] = {str(k): c for k, c in sorted(done.items())}
        write_manifest(folder, manifest)
        bar.update(chunks[i][1] - chunks[i][0])

    try:
        if workers == 1:
            for i in todo:
                record(i, write_chunk(i))
        else:
            _run_pool(todo, write_chunk, record, workers)
        os.fsync(fd)  # the bytes reach the disk before the manifest says so
    finally:
        os.close(fd)
        bar.close()
    manifest.update(complete=True, chunks=[done[i] for i in range(len(chunks))])
    del manifest["done"]
    write_manifest(folder, manifest)


def _run_pool(todo: list[int], work: Callable[[int], int], record: Callable[[int, int], None], workers: int) -> None:
    """``work(i)`` for every chunk on a thread pool, ``record`` (in this thread) as each one finishes. After a
    failure the chunks not started are dropped, the running ones finish and are recorded, then it raises."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pjepa-decode")
    futures: dict[Future, int] = {pool.submit(work, i): i for i in todo}
    error: BaseException | None = None
    try:
        for fut in as_completed(futures):
            if fut.cancelled():
                continue
            if fut.exception() is not None:
                if error is None:
                    error = fut.exception()
                    for other in futures:
                        other.cancel()
                continue
            record(futures[fut], fut.result())
    except BaseException:  # Ctrl-C: drop what has not started
        for other in futures:
            other.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
    if error is not None:
        raise error


# ------------------------------------------------------------------------------------------ the entry


def load_cached(name: str, split: str, path: PathArg, options: Mapping[str, Any],
                load: Callable[[], ImageDataset], cache_dir: str | os.PathLike | None = None,
                workers: int | None = None, chunk_rows: int | None = None,
                progress: bool | None = None) -> ImageDataset:
    """Split ``split`` of dataset ``name`` from its disk cache, built first (by ``load()``, the loader call)
    when it is missing or unfinished. ``path`` (already expanded) and ``options`` key the cache."""
    root = (Path(os.path.expanduser(os.path.expandvars(os.fspath(cache_dir)))) if cache_dir is not None
            else default_cache_dir())
    key = source_key(name, split, path, options, skip=root)
    folder, key_hash = cache_folder(root, key), _hash(key)
    ds = open_cache(folder, key_hash)
    if ds is not None:
        return ds
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the decoded-image cache folder {root}: {err.strerror or err}; set "
                        "data.cache_dir to a writable folder") from err
    with build_lock(root, folder.name):
        ds = open_cache(folder, key_hash)  # another process may have built it while this one waited
        if ds is None:
            build(folder, key, load, workers, chunk_rows, progress)
            ds = open_cache(folder, key_hash)
    if ds is None:  # build() either finishes the manifest or raises
        raise DataError(f"the decoded-image cache {folder} was not finished")
    return ds
