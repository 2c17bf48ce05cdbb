"""Checkpoints: weights as safetensors, training state as a non-executable tree.

A checkpoint is a folder ``checkpoints/<name>/`` holding
  - ``model.safetensors``: the method's state dict (named tensors, loadable alone),
  - ``state.safetensors``: optimiser, scaler, step, RNG and best-metric state
    (``pjepa.runs.state_io``: tensors + a JSON skeleton, never pickle).
Both files are written into ``.<name>.tmp/`` first; the folder then replaces the
old one by renames (old -> ``.<name>.old``, tmp -> name, delete old). A crash at
any point leaves either the old or the new checkpoint complete, and
``load_checkpoint`` falls back to ``.<name>.old`` if it finds only that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from pjepa.atomic import atomic_write_bytes, fsync_dir, move
from pjepa.errors import CheckpointError
from pjepa.runs.state_io import load_tree, read_scalars, save_tree

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
CHECKSUM_FILE = "checksums.json"  # sha256 of both files, written last: silent corruption is named on load
_warned_unverified: set[str] = set()


def save_checkpoint(ckpt_root: Path, name: str, model_state: dict[str, torch.Tensor], train_state: Any) -> Path:
    """Atomically write checkpoint ``ckpt_root/name``; returns its folder."""
    final, tmp, old = ckpt_root / name, ckpt_root / f".{name}.tmp", ckpt_root / f".{name}.old"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise CheckpointError(f"cannot create {tmp}: {e.strerror or e}; free space or fix permissions") from None
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    try:
        atomic_write_bytes(tmp / MODEL_FILE, save_safetensors_bytes(tensors))
        save_tree(tmp / STATE_FILE, train_state)
        sums = {f: _sha256(tmp / f) for f in (MODEL_FILE, STATE_FILE)}
        atomic_write_bytes(tmp / CHECKSUM_FILE, (json.dumps(sums, indent=1) + "\n").encode())
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)  # the half-written new one goes; the old one was never touched
        raise
    shutil.rmtree(old, ignore_errors=True)
    # Two renames, then one folder fsync for both: a crash between them leaves only ``.<name>.old``, which
    # checkpoint_path falls back to.
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(ckpt_root)
    shutil.rmtree(old, ignore_errors=True)
    return final


def keep_history(ckpt_root: Path, step: int, keep_last: int) -> None:
    """With ``keep_last`` > 1: keep ``last`` also as ``step_NNNNNNN`` and delete all but the newest
    ``keep_last`` such copies (the newest holds the same files as ``last``; ``best`` is separate). Copies
    are hard links where the filesystem allows: no extra space, as checkpoint files are replaced by
    renames, never modified in place."""
    if keep_last <= 1 or checkpoint_path(ckpt_root, "last") is None:
        return
    copy = ckpt_root / f"step_{step:07d}"
    if not copy.exists():
        tmp = ckpt_root / f".{copy.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(ckpt_root / "last", tmp, copy_function=_link_or_copy)
            move(tmp, copy)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"cannot keep {copy}: {e.strerror or e}; free space or set train.keep_last=1") from None
    for old in sorted(ckpt_root.glob("step_*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def checkpoint_path(ckpt_root: Path, name: str) -> Path | None:
    """The complete folder of checkpoint ``name`` (or its surviving old copy), or None."""
    for candidate in (ckpt_root / name, ckpt_root / f".{name}.old"):
        if (candidate / MODEL_FILE).is_file() and (candidate / STATE_FILE).is_file():
            return candidate
    return None


def checkpoint_step(ckpt_root: Path, name: str = "last") -> int | None:
    """The training step checkpoint ``name`` holds (read from its state file's header only), or None."""
    path = checkpoint_path(ckpt_root, name)
    if path is None:
        return None
    step = read_scalars(path / STATE_FILE).get("step")
    return int(step) if isinstance(step, int) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def verify_checkpoint(path: Path) -> bool:
    """Check both files of checkpoint folder ``path`` against its checksums (a CheckpointError naming the
    file that differs); False, with one warning per folder, for a checkpoint written before checksums."""
    sums_path = path / CHECKSUM_FILE
    if not sums_path.is_file():
        if str(path) not in _warned_unverified:
            _warned_unverified.add(str(path))
            warnings.warn(f"{path} was written before checkpoints carried checksums: loaded without verifying it",
                          stacklevel=3)
        return False
    try:
        sums = json.loads(sums_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{sums_path} is not readable JSON ({e}): the checkpoint is damaged; use another "
                              "checkpoint or resume from an earlier one") from None
    for name in (MODEL_FILE, STATE_FILE):
        if not isinstance(sums, dict) or sums.get(name) != _sha256(path / name):
            raise CheckpointError(f"{path / name} does not match the checksum written with it: the file was "
                                  "damaged after it was saved (disk, copy, edit); use another checkpoint "
                                  "(checkpoints/best, an earlier step_*) or train again")
    return True


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes((path / MODEL_FILE).read_bytes())
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"cannot read weights {path / MODEL_FILE}: {e}") from e


def load_checkpoint(ckpt_root: Path, name: str, map_location: str | torch.device = "cpu") -> tuple[dict, Any]:
    """(model state dict, training state) of checkpoint ``name`` under ``ckpt_root``."""
    path = checkpoint_path(ckpt_root, name)
    if path is None:
        raise CheckpointError(
            f"no complete checkpoint {name!r} under {ckpt_root}; "
            "the run stopped before its first checkpoint (lower train.ckpt_every) or the path is wrong"
        )
    verify_checkpoint(path)
    weights = {k: v.to(map_location) for k, v in load_weights(path).items()}
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # pjepa never saves these; a file from elsewhere or a corrupted one must not be rated as a result
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}): not loaded; use another checkpoint or retrain")
    return weights, load_tree(path / STATE_FILE, map_location=map_location)


def load_weights_into(module: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """``module.load_state_dict(weights)``, with an error that says what to check.

    Checkpoints written before encoders saved their position embedding (0.1) lack the
    ``*pos_embed`` buffers; those keep the fixed sin-cos values the run trained with.
    """
    expected = module.state_dict()
    legacy = {k for k in expected if k.endswith("pos_embed") and k not in weights}
    if legacy:
        weights = {**weights, **{k: expected[k] for k in legacy}}
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"the checkpoint in {where} does not fit the model its config.yaml builds ({first}); "
            "was config.yaml edited, or the checkpoint copied from another run?"
        ) from e
