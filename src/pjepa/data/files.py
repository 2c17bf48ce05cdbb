"""Reading the small text files a dataset folder holds (index files, class lists), safely.

Index files name other files (``val_annotations.txt``) or folders (``wnids.txt``).
Their entries are data, not trusted paths: an entry such as ``../../etc/passwd``
or ``/etc/passwd`` would make a loader read outside the dataset folder, so every
entry is checked before it is joined to the folder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from pjepa.errors import DataError


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (``what`` says what the file is, for the error); DataError when unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{what} {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                        "is it the right file? re-create or re-download it") from None
    except OSError as err:
        raise DataError(f"cannot read {what} {path}: {err.strerror or err}") from err


def inside(folder: Path, entry: str, where: str) -> Path:
    """``folder / entry``, refusing an entry that would leave ``folder``.

    Checked on the text, so it holds whatever exists on disk: an absolute path
    (POSIX or Windows, drive letters included), a ``..`` component or an empty
    entry raises DataError naming ``entry`` and ``where`` (file and line).
    Symlinks already in the folder are the user's own choice and are followed.
    """
    parts = PurePosixPath(entry.replace("\\", "/")).parts
    if (not entry or os.path.isabs(entry) or PurePosixPath(entry).is_absolute() or PureWindowsPath(entry).anchor
            or ".." in parts):
        raise DataError(f"{where}: entry {entry!r} points outside {folder}; entries must be paths relative "
                        "to that folder, without '..' — fix or re-create the index file")
    return folder / entry


def folder_summary(folder: Path, limit: int = 6) -> str:
    """'it is empty' or 'it holds 3 entries: a, b/, c': what a wrong folder holds, for an error."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as err:
        return f"it cannot be listed ({err.strerror or err})"
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"it holds {len(names)} {'entry' if len(names) == 1 else 'entries'}: {', '.join(names[:limit])}{more}"
