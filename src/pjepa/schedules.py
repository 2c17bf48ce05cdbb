"""Schedules as pure functions of the step: resuming needs only the step number.

(The official I-JEPA code uses generators that must be fast-forwarded on
resume; a function of ``step`` cannot drift.)
"""

from __future__ import annotations

import math


def cosine(start: float, end: float, progress: float) -> float:
    """Half-cosine from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def linear(start: float, end: float, progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


def learning_rate(step: int, total: int, peak: float, warmup: int, min_lr: float, start: float = 0.0) -> float:
    """Linear warmup from ``start * peak`` to ``peak`` over ``warmup`` steps, then cosine to ``min_lr``."""
    if step < warmup:
        return linear(start * peak, peak, step / max(warmup, 1))
    return cosine(peak, min_lr, (step - warmup) / max(total - warmup, 1))


def weight_decay(step: int, total: int, start: float, end: float) -> float:
    """Cosine ramp of the weight decay (I-JEPA: 0.04 -> 0.4)."""
    return cosine(start, end, step / max(total, 1))


def ema_momentum(step: int, total: int, start: float, end: float, kind: str = "cosine") -> float:
    """Teacher momentum from ``start`` to ``end`` (0.998 -> 1.0), cosine or linear."""
    if kind == "cosine":
        return cosine(start, end, step / max(total, 1))
    if kind == "linear":
        return linear(start, end, step / max(total, 1))
    raise ValueError(f"train.ema_schedule={kind!r}: choose cosine or linear")


def scaled_lr(lr: float, batch_size: int, ref_batch_size: int, rule: str) -> float:
    """The learning rate for the global batch: none | linear | sqrt scaling from ``ref_batch_size``."""
    if rule == "none":
        return lr
    ratio = batch_size / ref_batch_size
    if rule == "linear":
        return lr * ratio
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    raise ValueError(f"optim.lr_scaling={rule!r}: choose none, linear or sqrt")
