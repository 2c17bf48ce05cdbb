"""``DiskImages``: a decoded split in a ``.npy`` file, read row by row on demand.

With ``data.cache: disk`` an ``ImageDataset``'s ``images`` is one of these
instead of a tensor. It answers what the rest of pjepa asks of ``images``:
``len``, ``shape``, ``dtype``, ``ndim``, ``device``, and indexing by an int, a
slice or an integer tensor / array / list, which returns a real uint8 torch
tensor of those rows (in the order asked). ``subset`` gives a view on some rows
without reading any, which is how the validation split is carved from a split
on disk.

Rows are read with positional reads (``os.preadv``) rather than through a memory
map: pages of a mapping that a process has touched count in its resident memory
(up to the whole file, 20 GB for ImageNet-100 at 224 px, after one epoch),
whereas pages read into a buffer stay in the kernel's page cache, shared by all
processes (DDP ranks) and given back under memory pressure. The file itself is a
plain ``.npy``: ``numpy.load(path, mmap_mode="r")`` maps it for inspection.
A batch's rows are read in file order (sorted; a row asked twice is read once),
each run of consecutive rows by one scattered read straight into the rows' places
in the result; the disk reads of all runs are queued first
(``posix_fadvise(WILLNEED)``), so a cold batch waits for the disk about once, not
once per row.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pjepa.errors import DataError

#: Buffers per scattered read (the system's limit on I/O vectors, 1024 on Linux).
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16, 1024)
#: ``posix_fadvise`` hint that starts reading ahead without waiting (None where the platform lacks it).
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None) if hasattr(os, "posix_fadvise") else None

#: What ``DiskImages[...]`` accepts besides an int and a slice: one-dimensional integer indices.
Index = torch.Tensor | np.ndarray | list[int] | tuple[int, ...]


class DiskImages:
    """uint8 (N, 3, H, W) rows of the ``.npy`` file ``path`` (its data at byte ``offset``), read on demand.

    ``rows`` (int64 (N,), optional) maps this view's rows to the file's: a view made by ``subset``.
    """

    dtype = torch.uint8
    ndim = 4
    device = torch.device("cpu")

    def __init__(self, path: str | os.PathLike, file_shape: tuple[int, ...], offset: int,
                 rows: np.ndarray | None = None) -> None:
        if len(file_shape) != 4 or file_shape[1] != 3:
            raise ValueError(f"DiskImages needs a (N, 3, H, W) file, got shape {file_shape}")
        self.path, self.file_shape, self.offset = Path(path), tuple(int(s) for s in file_shape), int(offset)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.row_bytes = int(np.prod(self.file_shape[1:]))
        self._fd: int | None = None
        self._lock = threading.Lock()  # guards the descriptor's opening (and the seek + read fallback)

    # -- what callers ask of a tensor

    @property
    def shape(self) -> torch.Size:
        n = self.file_shape[0] if self.rows is None else len(self.rows)
        return torch.Size((n, *self.file_shape[1:]))

    def __len__(self) -> int:
        return int(self.shape[0])

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else int(self.shape[dim])

    def __repr__(self) -> str:
        view = "" if self.rows is None else f", {len(self)} of its {self.file_shape[0]} rows"
        return f"DiskImages({str(self.path)!r}, uint8 {tuple(self.shape)}{view})"

    def __getitem__(self, key: Any) -> torch.Tensor:
        """Rows ``key`` (an int, a slice, or 1-D integer indices) as a uint8 tensor (a copy, on the CPU)."""
        n = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(key)} is out of bounds for {n} images")
            return self._read(np.array([i], dtype=np.int64))[0]
        if isinstance(key, slice):
            return self._read(np.arange(n, dtype=np.int64)[key])
        return self._read(self._indices(key, n))

    def subset(self, idx: Index) -> DiskImages:
        """A view on rows ``idx`` of this one; nothing is read."""
        idx = self._indices(idx, len(self))
        return DiskImages(self.path, self.file_shape, self.offset, idx if self.rows is None else self.rows[idx])

    # -- reading

    @staticmethod
    def _indices(key: Any, n: int) -> np.ndarray:
        """``key`` as int64 (K,) in [0, n) (negatives counted from the end); TypeError / IndexError otherwise."""
        if isinstance(key, torch.Tensor):
            key = key.detach().cpu().numpy()
        idx = np.asarray(key)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise TypeError(f"DiskImages is indexed by an int, a slice or 1-D integer indices, got {idx.dtype} "
                            f"of shape {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"indices reach {int(idx.max()) if idx.max() >= n else int(idx.min())} but there "
                             f"are {n} images")
        return idx

    def _read(self, idx: np.ndarray) -> torch.Tensor:
        """uint8 (len(idx), 3, H, W): file rows ``rows[idx]``, read in file order straight into their places."""
        file_rows = idx if self.rows is None else self.rows[idx]
        k = len(file_rows)
        out = np.empty((k, *self.file_shape[1:]), dtype=np.uint8)
        if k == 0:
            return torch.from_numpy(out)
        flat = out.reshape(k, self.row_bytes)
        order = np.argsort(file_rows, kind="stable")  # file order: page-cache and disk friendly
        rows = file_rows[order]
        first = np.ones(k, dtype=bool)
        first[1:] = rows[1:] != rows[:-1]  # a row asked twice is read once, then copied
        u_rows, u_pos = rows[first], order[first]
        breaks = (np.flatnonzero(np.diff(u_rows) != 1) + 1).tolist()
        runs = list(zip([0, *breaks], [*breaks, len(u_rows)]))  # consecutive file rows: one read each
        fd = self._descriptor()
        if _WILLNEED is not None and len(runs) > 1:  # queue every run's disk reads at once, then wait on each
            for lo, hi in runs:
                os.posix_fadvise(fd, self.offset + int(u_rows[lo]) * self.row_bytes, (hi - lo) * self.row_bytes,
                                 _WILLNEED)
        for lo, hi in runs:
            start = self.offset + int(u_rows[lo]) * self.row_bytes
            p0 = int(u_pos[lo])
            if hi - lo == 1 or np.all(np.diff(u_pos[lo:hi]) == 1):  # in order in ``out`` too (a slice): one buffer
                self._read_into([flat[p0 : p0 + hi - lo].data], start)
                continue
            for a in range(lo, hi, _IOV_MAX):  # one scattered read: each file row into its place in ``out``
                b = min(a + _IOV_MAX, hi)
                self._read_into([memoryview(flat[p]) for p in u_pos[a:b].tolist()],
                                start + (a - lo) * self.row_bytes)
        if not first.all():
            firsts = np.maximum.accumulate(np.where(first, np.arange(k), 0))  # index in ``rows`` of each first copy
            dup = ~first
            flat[order[dup]] = flat[order[firsts[dup]]]
        return torch.from_numpy(out)

    def _descriptor(self) -> int:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    try:
                        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    except OSError as err:
                        raise DataError(f"cannot open the decoded-image cache {self.path}: {err.strerror or err}; "
                                        "delete its folder to rebuild it") from err
        return self._fd

    def _read_into(self, views: list[memoryview], offset: int) -> None:
        """Fill ``views`` (in turn) from byte ``offset`` of the file."""
        fd = self._descriptor()
        views = [v.cast("B") for v in views]
        while views:
            if hasattr(os, "preadv"):
                got = os.preadv(fd, views, offset)
            else:  # no positional reads on this platform: seek and read under the lock
                with self._lock:
                    os.lseek(fd, offset, os.SEEK_SET)
                    got = os.readv(fd, views)
            if got == 0:
                raise DataError(f"the decoded-image cache {self.path} ends before byte {offset}: it was truncated; "
                                f"delete the folder {self.path.parent} to rebuild it")
            offset += got
            while views and got >= len(views[0]):  # a short read: drop what is full, go on from there
                got -= len(views[0])
                views.pop(0)
            if views and got:
                views[0] = views[0][got:]

    # -- pickling (a descriptor does not travel) and clean-up

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "file_shape": self.file_shape, "offset": self.offset, "rows": self.rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        DiskImages.__init__(self, state["path"], state["file_shape"], state["offset"], state["rows"])

    def close(self) -> None:
        """Close the file descriptor (reopened by the next read)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        try:  # noqa: SIM105  (not contextlib.suppress: at interpreter shutdown contextlib may be gone too)
            self.close()
        except Exception:  # interpreter shutdown: os may be gone already
            pass
