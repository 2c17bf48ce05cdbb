"""VICReg's variance and covariance terms (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-
Covariance Regularization for Self-Supervised Learning", eqs. 1-4) on the student's features.

At ``token`` level (C-JEPA, Mo & Tong 2024) every token is a sample, so the spread between
positions inside one image satisfies the variance term; at ``image`` level each image's
mean-pooled tokens are one sample, so only differences between images do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pjepa.errors import ConfigError
from pjepa.regularisers.base import REGULARISERS, Regulariser, check_level, samples_at_level


def variance_loss(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(T, D) -> mean hinge of each dimension's std below 1 (VICReg eq. 1, gamma = 1)."""
    std = torch.sqrt(x.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(x: torch.Tensor) -> torch.Tensor:
    """(T, D) -> sum of squared off-diagonal covariances / D (VICReg eq. 3)."""
    T, D = x.shape
    x = x - x.mean(dim=0)
    cov = (x.T @ x) / max(T - 1, 1)  # (D, D)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return off.pow(2).sum() / D


@REGULARISERS.register("vicreg")
class VICReg(Regulariser):
    """``var_weight * variance + cov_weight * covariance`` of the student's features at ``level``.

    Options: var_weight, cov_weight (>= 0; VICReg's own are 25 / 1 beside an invariance
    weight of 25), level (``token`` or ``image``).
    """

    label = "VICReg"

    def __init__(self, var_weight: float = 1.0, cov_weight: float = 0.04, level: str = "token") -> None:
        super().__init__()
        for key, w in (("var_weight", var_weight), ("cov_weight", cov_weight)):
            if not w >= 0:
                raise ConfigError(f"reg.options.{key}={w!r}: need a weight >= 0")
        self.var_weight, self.cov_weight, self.level = var_weight, cov_weight, check_level(level)

    def forward(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = samples_at_level(z, self.level)  # (T, D)
        var, cov = variance_loss(x), covariance_loss(x)
        loss = self.var_weight * var + self.cov_weight * cov
        return loss, {"reg/var": var.detach(), "reg/cov": cov.detach()}
