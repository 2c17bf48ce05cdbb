"""Metrics to ``metrics.jsonl`` (one JSON object per logged step), TensorBoard (``RUN/tb``: view with
``tensorboard --logdir runs``) and, when ``train.wandb`` names a project, Weights & Biases.

The log is never torn where it matters: each row goes to the file in one ``write`` of one
whole line on an append-only descriptor, the rewrite on resume is atomic (temporary file,
fsync, rename), and readers skip a line that does not parse (a write cut short by a full
disk or a kill) with a warning instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import threading
import warnings
from pathlib import Path
from typing import Any

from pjepa.atomic import atomic_write_bytes
from pjepa.errors import CheckpointError


class MetricsLogger:
    """Append-only metrics log; on resume, entries after the checkpoint step are dropped.

    Dropping them makes a resumed run's log equal an uninterrupted run's: the
    steps between the last checkpoint and a crash are trained again.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None,
                 wandb_project: str = "", config: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if wandb_project:
            self._wandb = start_wandb(run_dir, wandb_project, config or {})
        if resume_step is not None and self.path.exists():
            self._truncate(resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a core dependency; tolerate a user who removed it
            pass
        else:
            self._tb = _TensorBoard(SummaryWriter, run_dir / "tb", resume_step)

    def _truncate(self, step: int) -> None:
        """Keep the rows up to ``step`` (atomically: a kill here leaves the old log or the new one)."""
        kept = [json.dumps(r, allow_nan=True) for r in read_metrics(self.path.parent) if r["step"] <= step]
        atomic_write_bytes(self.path, "".join(line + "\n" for line in kept).encode())

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        append_line(self.path, json.dumps({"step": step, **clean}, allow_nan=True))
        if self._tb is not None:
            self._tb.add_scalars(step, {k: v for k, v in clean.items() if isinstance(v, float) and math.isfinite(v)})
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in clean.items() if isinstance(v, float)}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class _TensorBoard:
    """TensorBoard's event writer with its failures named: it writes from a background thread, which meets a
    full disk first and would print a raw traceback; that thread's error is kept quiet here and raised in the
    training thread at the next call as a CheckpointError naming the folder (metrics.jsonl and the
    checkpoints written before stay intact, and ``--resume`` continues the run)."""

    def __init__(self, writer_cls: Any, folder: Path, resume_step: int | None) -> None:
        self.folder = folder
        _quiet_tensorboard_thread()
        self._w = self._call(lambda: writer_cls(str(folder), purge_step=resume_step))

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except OSError as e:
            raise CheckpointError(f"cannot write TensorBoard events to {self.folder}: {e.strerror or e}; free "
                                  "space or fix permissions, then continue the run with pjepa train --resume") from None

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        self._call(lambda: [self._w.add_scalar(k, v, step) for k, v in values.items()])

    def close(self) -> None:
        self._call(self._w.close)


def _quiet_tensorboard_thread() -> None:
    """Install (once) a ``threading.excepthook`` that keeps TensorBoard's writer thread from printing a raw
    traceback for an OSError; the writer re-raises that error in the caller's thread at its next call."""
    previous = threading.excepthook
    if getattr(previous, "_pjepa_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if issubclass(args.exc_type, OSError) and type(args.thread).__module__.startswith("tensorboard."):
            return
        previous(args)

    hook._pjepa_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def start_wandb(run_dir: Path, project: str, config: dict[str, Any]) -> Any:
    """A Weights & Biases run for ``run_dir`` (optional: ``pip install wandb``). Its files go to
    ``RUN/wandb``; a resumed pjepa run continues the same W&B run (its id is kept in ``RUN/wandb_id``).
    ``WANDB_MODE=offline`` logs without a network (``wandb sync RUN/wandb/offline-run-*`` uploads later)."""
    try:
        import wandb
    except ImportError:
        raise CheckpointError(f"train.wandb={project!r} needs the wandb package: pip install wandb (or unset "
                              "train.wandb; metrics.jsonl and TensorBoard log every run anyway)") from None
    id_path = run_dir / "wandb_id"
    run_id = id_path.read_text().strip() if id_path.is_file() else None
    if not run_id:
        run_id = secrets.token_hex(4)  # W&B run ids: 8 characters of [a-z0-9]
        atomic_write_bytes(id_path, run_id.encode())
    return wandb.init(project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
                      config=config, reinit=True)


def append_line(path: Path, line: str) -> None:
    """Append ``line`` + newline in one write (O_APPEND: concurrent appenders never interleave inside a
    line); a failed write (disk full, read-only) is a CheckpointError naming the file."""
    data = (line + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        raise CheckpointError(f"cannot append to {path}: {e.strerror or e}; free space or fix permissions, "
                              "then continue the run with pjepa train --resume") from None
    if written != len(data):
        raise CheckpointError(f"cannot append to {path}: wrote {written} of {len(data)} bytes (disk full?); "
                              "free space, then continue the run with pjepa train --resume")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every row of ``run_dir/metrics.jsonl``; a line that does not parse (torn by a kill or a full disk)
    is skipped with a warning that names it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            warnings.warn(f"{path}: line {i} is not a whole metrics row (torn write?); skipped", stacklevel=2)
            continue
        rows.append(row)
    return rows
