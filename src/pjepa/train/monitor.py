"""The step monitor: metric means over a logging window and a non-finite guard, without host syncs.

Per step, metrics are summed on the device and the step of the first
non-finite loss is remembered there; the host reads them only every
``train.log_every`` steps, which is also when a bad loss is reported. The loop
checkpoints only after that check, so a NaN never overwrites a good checkpoint.
"""

from __future__ import annotations

import time

import torch

from pjepa.errors import PJepaError
from pjepa.methods import Batch, StepOutput


class NonFiniteLossError(PJepaError, RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class StepMonitor:
    """Window means of every metric (per key: diagnostics appear only on logging steps)."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.tensor(-1, device=device)  # step of the first non-finite loss
        self.bad_stats = torch.zeros(3, device=device)  # (loss, image mean, image std) of that step
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.start = 0, time.perf_counter()

    def add(self, batch: Batch, out: StepOutput) -> None:
        loss = out.loss.detach()
        new_bad = (self.first_bad < 0) & ~torch.isfinite(loss)  # device-side: no host sync per step
        self.first_bad = torch.where(new_bad, batch.step, self.first_bad)
        x = batch.images
        self.bad_stats = torch.where(new_bad, torch.stack([loss.float(), x.mean(), x.std()]), self.bad_stats)
        for k, v in out.metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1

    def check_finite(self, batch_size: int, where: str) -> str | None:
        """None, or the message of the first non-finite loss (one host sync)."""
        bad = int(self.first_bad)
        if bad < 0:
            return None
        loss, mean, std = self.bad_stats.tolist()
        return (f"non-finite loss ({loss}) at step {bad} (its batch of {batch_size} images: mean {mean:.4f}, "
                f"std {std:.4f}); the last good checkpoint in {where} is kept. "
                "Try a lower optim.lr, train.precision=fp32 or a smaller optim.grad_clip.")

    def flush(self, global_batch: int) -> dict[str, float]:
        """The window's means (one host sync) and images/s; starts a new window."""
        elapsed = time.perf_counter() - self.start
        row = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        row["images_per_s"] = self.steps * global_batch / max(elapsed, 1e-9)
        self._reset()
        return row
