"""What the training loop needs from a method (I-JEPA, N-JEPA, MAE, ...).

One loop trains every method: the loop augments a batch, calls ``forward``
for the loss, steps the optimiser, and applies the EMA pairs the method
declares. Evaluation asks the method for the encoder whose features it rates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn as nn

from pjepa.errors import ConfigError

Metrics = dict[str, torch.Tensor | float]


class Method(nn.Module, ABC):
    @abstractmethod
    def forward(
        self, images: torch.Tensor, generator: torch.Generator, diagnostics: bool = False
    ) -> tuple[torch.Tensor, Metrics]:
        """(B, 3, H, W) normalised images -> (scalar loss, metrics).

        ``generator`` (CPU) drives every random choice of the step (masks,
        noise), so a step is a pure function of its inputs and the weights.
        ``diagnostics=True`` adds costlier monitors (effective rank, ...).
        """

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(target parameters, online parameters) updated by the loop's EMA."""
        return [], []

    def head_conditions(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (h (B, T, Dp), y (B, T, D)): the predictor head's inputs and targets.

        Used by the shared head metrics (``pjepa eval head``); methods without a
        predictor head (MAE) keep this default.
        """
        raise ConfigError(f"method {type(self).__name__} has no predictor head to evaluate; use an I-JEPA run")

    @abstractmethod
    def feature_encoder(self, which: str = "target") -> nn.Module:
        """An encoder mapping (B, 3, H, W) -> (B, N, D) tokens for evaluation."""
