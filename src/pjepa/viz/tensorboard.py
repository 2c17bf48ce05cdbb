"""TensorBoard views of a finished run: its hyperparameters with final metrics, and the report's figures.

Both go to their own event folders under ``RUN/tb/`` (``hparams/`` and ``figures/``), never the
training's own event file: a report may be made again (the folders are replaced) while the
training log stays untouched. ``tensorboard --logdir RUN/tb`` shows them beside training.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pjepa.config import config_to_dict
from pjepa.eval.protocols import tensorboard_columns
from pjepa.runs import Run


def hparams_of(run: Run) -> dict[str, Any]:
    """The run's config flattened to scalar ``section.key`` entries (TensorBoard takes str / int / float / bool)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        elif value is not None:
            flat[prefix] = str(value)

    walk("", config_to_dict(run.config))
    return flat


def final_metrics(run: Run) -> dict[str, float]:
    """The run's last training loss, last validation kNN@1 and the evaluation results the protocols
    declare for TensorBoard (``Column.tensorboard``: ``eval/knn``, ``eval/calibration_crps``, ...; absent
    ones are skipped)."""
    out: dict[str, float] = {}
    for row in run.metrics():
        for key, name in (("train/loss", "final/train_loss"), ("knn/top1_weighted", "final/val_knn")):
            if isinstance(row.get(key), (int, float)):
                out[name] = float(row[key])
    for protocol, col in tensorboard_columns():
        r = run.eval_result(protocol.stem(col.result))
        value = col.read(r) if isinstance(r, dict) else None
        if isinstance(value, (int, float)):
            out[f"eval/{col.tensorboard}"] = float(value)
    return out


def write_tensorboard(run: Run, figures: Sequence[Path] = ()) -> list[Path]:
    """Replace ``RUN/tb/hparams`` and ``RUN/tb/figures``; returns the two folders written."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    written = []
    hp_dir, fig_dir = run.path / "tb" / "hparams", run.path / "tb" / "figures"
    for d in (hp_dir, fig_dir):
        shutil.rmtree(d, ignore_errors=True)
    with SummaryWriter(str(hp_dir)) as w:
        w.add_hparams(hparams_of(run), final_metrics(run) or {"final/none": float("nan")}, run_name=".")
    written.append(hp_dir)
    if figures:
        with SummaryWriter(str(fig_dir)) as w:
            for path in figures:
                image = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
                w.add_image(path.stem, image, dataformats="HWC")
        written.append(fig_dir)
    return written
