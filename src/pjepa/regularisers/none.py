"""``reg.name: none``: no anti-collapse term (MAE, the STL-10 comparison presets, the I-JEPA paper's recipe)."""

from __future__ import annotations

import torch

from pjepa.regularisers.base import REGULARISERS, Regulariser


@REGULARISERS.register("none")
class NoRegulariser(Regulariser):
    """No anti-collapse term: the loss is the method's own."""

    active = False

    def forward(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return z.new_zeros(()), {}
