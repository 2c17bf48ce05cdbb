"""Atomic file writes: a reader sees the old file or the new one, never a mix, and a crash leaves no half file.

Every file pjepa writes for later reading (run files, checkpoints, encoder weights, feature caches,
figures, downloads, converted datasets) goes through here:

1. the data goes to a temporary file beside the target (same folder, hence the same filesystem, so the
   rename below is atomic), named ``.<name>.<random>.tmp``;
2. the temporary file is fsynced: its bytes are on the disk before the rename can be;
3. ``os.replace`` puts it onto the target;
4. the folder is fsynced, so the rename itself survives a power cut.

On any failure the temporary file is removed and the target is untouched. ``atomic_write_bytes`` /
``atomic_write_text`` / ``atomic_write_json`` write data held in memory; ``atomic_path`` yields the
temporary path to writers that want a file name of their own (``safetensors.torch.save_file``,
``torch.save``, matplotlib's ``savefig``, a download stream). ``move`` renames a file or folder aside
(into ``previous/``) durably. Only a checkpoint folder's swap (``pjepa.runs.checkpoint``) renames on its
own: it swaps two folders in three steps and falls back to the old copy on load.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pjepa.errors import CheckpointError


def fsync_dir(directory: str | os.PathLike) -> None:
    """Persist the renames and creations in ``directory`` (POSIX); a no-op where a folder cannot be opened
    or fsynced (Windows, some network filesystems): the rename has happened either way."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (random: two writers of one target never share it)."""
    return path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"


def _fsync_file(path: Path) -> None:
    """Flush a closed file's bytes to the disk (opened read-write: Windows refuses to flush a read-only handle)."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (steps 1-4 of the module docstring).

    The parent folder must exist. A failure (disk full, read-only, permissions) is a CheckpointError naming
    the file; the previous version, if any, is intact.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write {path}: directory {path.parent} does not exist")
    tmp = _temporary(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, like open(..., "wb")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only, permissions: say which file, keep the old one
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path} ({len(data)} bytes): {e.strerror or e}; the previous "
                              "version, if any, is intact. Free space or fix permissions, then resume") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """``text`` encoded with ``encoding``, written by :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, **dumps: Any) -> None:
    """``json.dumps(obj, indent=indent, **dumps)`` and a final newline, written by :func:`atomic_write_bytes`."""
    atomic_write_text(path, json.dumps(obj, indent=indent, **dumps) + "\n")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(target) as tmp: writer(tmp)``: the writer fills the temporary file ``tmp``; when the
    block ends without an error, ``tmp`` is fsynced and renamed onto ``target`` (and the folder fsynced).
    If the block or the rename fails, ``tmp`` is removed, ``target`` is untouched and the error propagates
    unchanged (each writer keeps its own error messages). The parent folder must exist."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename file or folder ``src`` to ``dst`` (replacing a file there) on one filesystem, and fsync the
    folders involved so the move survives a crash. Errors are the ``OSError`` of ``os.replace``."""
    src, dst = Path(src), Path(dst)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent.resolve() != dst.parent.resolve():
        fsync_dir(src.parent)
