"""The deterministic I-JEPA head: one vector per target token.

Loss (Assran et al. 2023, eq. 1, with the smooth-L1 of the official code):
    align = mean_{b,m} loss(y_hat_{b,m}, y_{b,m})
plus optional VICReg-style regularisers on the predictions (Bardes et al.
2022), which the Probabilistic-JEPA baseline weighted 1.0 / 0.1 / 0.01:
    var = mean_d relu(1 - std_d(y_hat))          (std over all B*M tokens)
    cov = sum_{i != j} C_ij^2 / D                (C: covariance of y_hat)
It is a point mass: ``sample`` repeats the prediction, which is what makes the
two-mode toy problem fall between the modes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.errors import ConfigError
from pjepa.heads.base import Diagnostics, PredictorHead
from pjepa.heads.registry import HEADS
from pjepa.regularisers.vicreg import covariance_loss, variance_loss


@HEADS.register("deterministic")
class DeterministicHead(PredictorHead):
    differentiable_predict = True

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        loss: str = "smooth_l1",
        align_weight: float = 1.0,
        var_weight: float = 0.0,
        cov_weight: float = 0.0,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        if loss not in ("smooth_l1", "mse"):
            raise ConfigError(f"head.options.loss={loss!r}: choose smooth_l1 or mse")
        self.loss_name = loss
        self.align_weight, self.var_weight, self.cov_weight = align_weight, var_weight, cov_weight
        self.proj = nn.Linear(cond_dim, embed_dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h)  # (B, M, D)

    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        pred = self.predict(h).float()  # (B, M, D); regularisers in fp32
        y = y.float()
        fn = F.smooth_l1_loss if self.loss_name == "smooth_l1" else F.mse_loss
        align = fn(pred, y)
        total = self.align_weight * align
        diag: Diagnostics = {"align": align.detach()}
        if self.var_weight or self.cov_weight:
            flat = pred.reshape(-1, pred.shape[-1])  # (B*M, D)
            var, cov = variance_loss(flat), covariance_loss(flat)
            total = total + self.var_weight * var + self.cov_weight * cov
            diag.update(var=var.detach(), cov=cov.detach())
        return total, diag

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.predict(h).unsqueeze(0).expand(n, *h.shape[:-1], self.embed_dim)
