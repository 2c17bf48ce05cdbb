"""The regulariser contract and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn as nn

from pjepa.errors import ConfigError
from pjepa.profiling import part
from pjepa.registry import Registry

REGULARISERS: Registry = Registry("regulariser")
LEVELS = ("token", "image")


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ConfigError(f"reg.options.level={level!r}: choose token (every token a sample) "
                          "or image (each image's mean-pooled tokens one sample)")
    return level


def samples_at_level(z: torch.Tensor, level: str) -> torch.Tensor:
    """(B, N, D) tokens -> (B*N, D) at ``token`` level or (B, D) per-image means at ``image`` level, in fp32."""
    z = z.float()
    return z.flatten(0, 1) if level == "token" else z.mean(dim=1)


def regularise(reg: Regulariser, z: torch.Tensor, step: int, metrics: dict) -> torch.Tensor:
    """``reg``'s weighted loss on the student's tokens z (B, N, D), its metrics added to ``metrics``;
    a zero (and no call) for ``none``."""
    if not reg.active:
        return z.new_zeros(())
    with part("reg"):
        loss, reg_metrics = reg(z, step)
    metrics.update(reg_metrics)
    return loss


class Regulariser(nn.Module, ABC):
    """``forward(z, step) -> (weighted loss, metrics)``; ``z`` (B, N, D) are the student's tokens.

    Regularisers hold no trainable parameters (their buffers are not saved), so
    adding or switching one never changes a checkpoint's keys.
    """

    #: False for ``none``: the method can skip the call (and tables name no regulariser).
    active: bool = True
    #: How tables name the regulariser ("VICReg"); empty: its registered name.
    label: str = ""

    @abstractmethod
    def forward(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss to add and detached metrics (``reg/...``)."""
