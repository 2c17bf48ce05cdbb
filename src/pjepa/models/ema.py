"""Exponential moving average of the context encoder into the target encoder.

The momentum follows a schedule of the training step (0.998 -> 1.0 by default);
the update is one fused ``torch._foreach_lerp_`` over all parameter pairs:
target <- m * target + (1 - m) * online = lerp(target, online, 1 - m).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """In place: every ``target[i] <- momentum * target[i] + (1 - momentum) * online[i]``."""
    if len(target) != len(online):
        raise ValueError(f"EMA pairs differ in length: {len(target)} targets, {len(online)} online")
    if target:
        torch._foreach_lerp_(target, online, 1.0 - momentum)
