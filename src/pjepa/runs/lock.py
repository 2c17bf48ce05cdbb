"""One writer per run directory: ``RUN/.lock`` holds the writer's pid, host and start time.

A second ``pjepa train`` into the same directory (a fresh run or a resume) is refused with a
named error while the lock's process lives. The lock appears whole or not at all: it is written to a
temporary file first and linked into place (``os.link`` fails if the lock exists), so no second writer
ever sees it created but empty and takes it over as stale. A lock left by a process that died (SIGKILL,
power loss) on this host is stale and taken over, so kill-then-resume keeps working; a lock
from another host cannot be checked from here, and the error says how to clear it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from pjepa.errors import CheckpointError

LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # torn or vanished: a lock nobody can prove is held
    return data if isinstance(data, dict) else None


#: An unreadable lock younger than this is one being written (on a file system without hard links).
FRESH_SECONDS = 10.0


def writer(run_dir: str | Path) -> dict[str, Any] | None:
    """The live writer of ``run_dir`` (``{"pid", "host", "started"}``), or None: no lock, or a stale one
    (its process on this host is gone). A lock from another host counts as live: it cannot be checked."""
    path = Path(run_dir) / LOCK_FILE
    holder = _read(path)
    if holder is None:
        try:
            fresh = time.time() - path.stat().st_mtime < FRESH_SECONDS
        except OSError:
            return None
        return {"pid": "?", "host": "?", "started": path.stat().st_mtime} if fresh else None
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return None
    return holder


class RunLock:
    """``with RunLock(run_dir): ...`` holds the run directory's write lock (created with O_EXCL)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def _holder_error(self, holder: dict[str, Any]) -> CheckpointError:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        where = f"pid {holder.get('pid')} on host {holder.get('host')}"
        hint = ("wait for it to finish or stop it" if holder.get("host") == socket.gethostname()
                else f"if that process is gone, delete {self.path}")
        return CheckpointError(f"{self.path.parent} is being written by {where} since {since}: "
                               f"one writer per run directory; {hint}")

    def _create(self, me: dict[str, Any]) -> bool:
        """Create the lock holding ``me`` atomically; False if it exists."""
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(me))
        try:
            os.link(tmp, self.path)  # fails if the lock exists; the lock is never seen half-written
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write (FRESH_SECONDS covers it)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            if self._create(me):
                self.held = True
                return self
            holder = writer(self.path.parent)
            if holder is not None:
                raise self._holder_error(holder)
            self.path.unlink(missing_ok=True)  # a dead writer's lock: take it over
        raise CheckpointError(f"could not take the lock {self.path}: another process keeps creating it")

    def release(self) -> None:
        if self.held:
            holder = _read(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
