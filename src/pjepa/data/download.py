"""Download files (with checksum) and unpack tarballs safely.

Used by the loaders' "path is None" branch. ``urllib`` handles ``https://``
as well as ``file://`` URLs, so the tests exercise the same code offline.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pjepa.atomic import atomic_path
from pjepa.errors import DataError

_CHUNK = 1 << 20


def cache_root() -> Path:
    """Root of pjepa's download cache: ``$PJEPA_CACHE`` or ``~/.cache/pjepa``."""
    return Path(os.environ.get("PJEPA_CACHE", "~/.cache/pjepa")).expanduser()


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest (``"md5"`` or ``"sha256"``) of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected(md5: str | None, sha256: str | None) -> tuple[str, str] | None:
    """The (algorithm, hex digest) to check, or None when no checksum is given."""
    if md5 is not None and sha256 is not None:
        raise DataError("download: give md5= or sha256=, not both")
    if md5 is not None:
        return "md5", md5.lower()
    if sha256 is not None:
        return "sha256", sha256.lower()
    return None


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch ``url`` to ``dest`` and return ``dest``.

    An existing ``dest`` whose checksum matches (or any existing ``dest`` when
    no checksum is given) is kept. The data goes to a temporary file in the same
    folder, is hashed while streaming, and is renamed onto ``dest`` only when
    complete and correct, so an interrupted download never leaves a bad file.
    """
    dest = Path(dest)
    check = _expected(md5, sha256)
    if dest.is_file() and (check is None or file_digest(dest, check[0]) == check[1]):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            got = _stream(url, out, check[0] if check else "md5", progress)
        if check is not None and got != check[1]:
            raise DataError(
                f"checksum mismatch for {url}: expected {check[0]} {check[1]}, got {got}; "
                "the download is corrupt or the file changed upstream — delete it and retry, "
                "or download it by hand and pass path="
            )
    return dest


def _stream(url: str, out, algorithm: str, progress: bool) -> str:
    """Copy the response body of ``url`` into ``out``; return its hex digest."""
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            name = url.rsplit("/", 1)[-1][:40]
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataError(
            f"cannot download {url}: {err}; check the network, or download the file by hand "
            "and pass its local path with path="
        ) from err
    return digest.hexdigest()


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse tar members that would land outside the target folder."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or os.path.isabs(member.name) or ".." in parts:
        raise DataError(f"refusing to extract {member.name!r} from {archive}: path leaves the target folder")
    if member.issym() or member.islnk():
        raise DataError(f"refusing to extract link {member.name!r} from {archive}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"refusing to extract {member.name!r} from {archive}: not a regular file or folder")


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a (possibly compressed) tarball into ``dest`` and return ``dest``.

    Every member is checked first: absolute paths, ``..`` components, links and
    device files raise DataError and nothing is written.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: members are already checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as err:
        raise DataError(f"cannot read tar archive {archive}: {err}; delete it and download again") from err
    return dest
