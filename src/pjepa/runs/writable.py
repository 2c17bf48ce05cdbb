"""One check, before any work, that a command's output can be written.

Every command that writes (train, eval, sweep, export, report, plot, ``table --csv``, gen study) calls
``writable_dir`` or ``writable_file`` on its output first: a path that is a file where a folder is
wanted (or the reverse), a folder that cannot be created, or one that cannot be written (read-only
mount, permissions) is a ``CheckpointError`` naming the path and the flag, before minutes of work are
spent. Writability is probed by creating and removing a temporary file (permission bits do not stop
root, a read-only mount does).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pjepa.errors import CheckpointError


def _probe(folder: Path, what: str) -> None:
    probe = folder / f".pjepa-write-probe-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise CheckpointError(f"{what} {folder} is not writable ({e.strerror or e}); choose another folder or "
                              "fix its permissions") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a folder that can be written, or that can be created and then written (nothing is
    created here: a command that fails a later check leaves no empty folder); a CheckpointError naming it
    otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{what} {path} is a file, not a folder: pick a folder (or move the file away)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CheckpointError(f"cannot create {what} {path}: {existing} is a file, not a folder; choose another place")
    _probe(existing, what if existing == path else f"the folder {existing} holding {what}")
    return path


def writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a file that can be written (its folder created); a CheckpointError if it is a folder or
    its folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder: give a file name (e.g. {path / 'out'})")
    writable_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what} {path}")
    return path
