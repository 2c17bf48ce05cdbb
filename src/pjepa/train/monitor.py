"""The step monitor: metric means over a logging window and a non-finite guard, without host syncs.

Per step, metrics are summed on the device and the step of the first
non-finite loss is remembered there; the host reads them only every
``train.log_every`` steps, which is also when a bad loss is reported. The loop
checkpoints only after that check, so a NaN never overwrites a good checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from pjepa.errors import PJepaError
from pjepa.methods import Batch, StepOutput


class NonFiniteLossError(PJepaError, RuntimeError):
    """Training produced a NaN/inf loss, gradient or weight; the last good checkpoint is kept."""


def params_finite(params: list[torch.Tensor]) -> bool:
    """True when every parameter is finite (one fused norm, one host sync)."""
    if not params:
        return True
    norms = torch._foreach_norm([p.detach() for p in params])
    return bool(torch.isfinite(torch.stack(norms)).all())


class StepMonitor:
    """Window means of every metric (per key: diagnostics appear only on logging steps)."""

    def __init__(self, device: torch.device, check_grads: bool = True) -> None:
        # With a GradScaler, inf gradients are expected (the scaler skips that step): check only without one.
        self.check_grads = check_grads
        self.first_bad = torch.tensor(-1, device=device)  # step of the first non-finite loss or gradient
        self.bad_stats = torch.zeros(3, device=device)  # (loss, image mean, image std) of that step
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.timed, self.start = 0, 0, time.perf_counter()  # timed: steps of this process only

    def add(self, batch: Batch, out: StepOutput) -> None:
        loss = out.loss.detach()
        finite = torch.isfinite(loss)
        grad_norm = out.metrics.get("train/grad_norm")
        if self.check_grads and torch.is_tensor(grad_norm):  # a finite loss can still give inf/nan gradients
            finite = finite & torch.isfinite(grad_norm)
        new_bad = (self.first_bad < 0) & ~finite  # device-side: no host sync per step
        self.first_bad = torch.where(new_bad, batch.step, self.first_bad)
        x = batch.images
        self.bad_stats = torch.where(new_bad, torch.stack([loss.float(), x.mean(), x.std()]), self.bad_stats)
        for k, v in out.metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1
        self.timed += 1

    def check_finite(self, batch_size: int, where: str, kept: Callable[[], str | None] = lambda: None) -> str | None:
        """None, or the message of the first non-finite loss (one host sync). ``kept()`` says which checkpoint
        survives (None: the run had not saved one yet, and the message says so); asked only on a failure."""
        bad = int(self.first_bad)
        if bad < 0:
            return None
        loss, mean, std = self.bad_stats.tolist()
        kept_now = kept()
        survives = (f"the last good checkpoint ({kept_now}) in {where} is kept" if kept_now
                    else "no checkpoint had been saved yet, so nothing is kept: start again")
        return (f"non-finite loss or gradients (loss {loss}) at step {bad} (its batch of {batch_size} images: mean "
                f"{mean:.4f}, std {std:.4f}); {survives}. "
                "Try a lower optim.lr, train.precision=fp32 or a smaller optim.grad_clip.")

    def state(self) -> dict:
        """The open window (sums, counts, steps) for a checkpoint taken mid-window; {} when it is empty."""
        if not self.steps:
            return {}
        sums = {k: (v.detach().clone() if torch.is_tensor(v) else torch.tensor(float(v))) for k, v in self.sums.items()}
        return {"sums": sums, "counts": dict(self.counts), "steps": self.steps}

    def load_state(self, state: dict) -> None:
        """Continue a window ``state()`` saved (its timing restarts: images/s covers this process only)."""
        if not state:
            return
        device = self.first_bad.device
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}
        self.steps = int(state["steps"])

    def flush(self, global_batch: int) -> dict[str, float]:
        """The window's means (one host sync) and images/s; starts a new window."""
        elapsed = time.perf_counter() - self.start
        row = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        row["images_per_s"] = self.timed * global_batch / max(elapsed, 1e-9)
        self._reset()
        return row
