"""Small helpers with no dependencies inside pjepa: seeds, git, run directories."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). The CLI calls it once, offset by rank."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stream_seed(seed: int, a: int, b: int, stream: str) -> int:
    """A 63-bit seed for one independent random stream, e.g. (seed, step, rank, "mask").

    Hashing (rather than ``seed + step``) keeps streams of neighbouring steps,
    ranks and purposes unrelated.
    """
    digest = hashlib.blake2b(f"{seed}/{a}/{b}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the source tree (with '-dirty' if modified), or None outside git."""
    root = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def next_run_dir(root: Path, name: str) -> Path:
    """``root/NNNNN-name`` with the next free number (EDM-style numbered runs)."""
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
    return root / f"{max(numbers, default=-1) + 1:05d}-{name}"
