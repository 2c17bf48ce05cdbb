"""Flow head: a conditional normalizing flow trained by exact NLL.

Conditional RealNVP (Dinh et al. 2017, "Density estimation using Real NVP").
The forward map f(., h) sends a target y to a base sample z through ``layers``
steps of [ActNorm (Kingma & Dhariwal 2018, optional)] then an affine coupling
(Dinh et al. 2017, eqs. 4-6). A coupling splits the coordinates by a binary mask
(even / odd, flipping each layer) into a kept part a and a changed part b:
    s, t = net([y_a, h]),   s <- c * tanh(s / c)      (soft clamp, c = scale_clamp)
    z_a = y_a,              z_b = y_b * exp(s) + t,     log|det| = sum(s)
and the change of variables (Dinh et al. 2017, eq. 3) gives the exact density
    log p(y | h) = log N(f(y, h); 0, I) + sum_layers log|det d f_l / d x|.
The loss is the per-dimension NLL, mean over tokens of -log p(y | h) / D.
``sample`` pushes z ~ N(0, I) through the inverse; ``predict`` is f^-1(0, h),
the image of the base mode (cheap and deterministic; neither the mean nor
necessarily the mode of p(y | h), since the Jacobian reweights densities).

Flow matching, which learns a velocity field between the same base and the
targets instead of an invertible map, is the ``flow_matching`` head
(``pjepa.heads.flow_matching``).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn as nn

from pjepa.heads.base import Diagnostics, PredictorHead, check_option, full_precision, is_count
from pjepa.heads.layers import ActNorm, base_draws
from pjepa.heads.registry import HEADS


def coupling_split(dim: int, parity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, changed) of a coupling: coordinates i with i % 2 == parity change.

    For dim == 1 one side would be empty; then the single coordinate always
    changes, conditioned on h alone (every layer is an h-dependent affine map).
    """
    idx = torch.arange(dim, device="cpu")  # index bookkeeping: on the CPU even when built on "meta"
    change = idx[idx % 2 == parity]
    if change.numel() == 0:
        change = idx
    keep = idx[~torch.isin(idx, change)]
    return keep, change


class AffineCoupling(nn.Module):
    """z_b = x_b * exp(s) + t with (s, t) = net([x_a, h]); x_a passes through unchanged."""

    keep: torch.Tensor  # buffers: the index sets of coupling_split
    change: torch.Tensor

    def __init__(self, dim: int, cond_dim: int, hidden: int, parity: int, scale_clamp: float) -> None:
        super().__init__()
        keep, change = coupling_split(dim, parity)
        self.register_buffer("keep", keep, persistent=False)
        self.register_buffer("change", change, persistent=False)
        self.scale_clamp = scale_clamp
        layers = (nn.Linear(keep.numel() + cond_dim, hidden), nn.Linear(hidden, hidden),
                  nn.Linear(hidden, 2 * change.numel()))  # built in this order: the seeded draws stay the same
        self.net = nn.Sequential(layers[0], nn.SiLU(), layers[1], nn.SiLU(), layers[2])
        # Near-zero (not zero) output layer: the flow starts ~ the identity, yet d loss / d h != 0.
        nn.init.trunc_normal_(layers[2].weight, std=1e-3)
        nn.init.zeros_(layers[2].bias)

    def scale_shift(self, xa: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, |a|), (R, Dp) -> clamped log-scale s and shift t, each (R, |b|)."""
        raw, shift = self.net(torch.cat([xa, h], dim=-1)).chunk(2, dim=-1)
        return self.scale_clamp * torch.tanh(raw / self.scale_clamp), shift

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, D), (R, Dp) -> z (R, D), log|det dz/dx| (R,)."""
        s, t = self.scale_shift(x[..., self.keep], h)
        zb = x[..., self.change] * torch.exp(s) + t
        return x.index_copy(-1, self.change, zb), s.sum(-1)

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(R, D), (R, Dp) -> x (R, D); z_a = x_a, so (s, t) are recomputed exactly."""
        s, t = self.scale_shift(z[..., self.keep], h)
        xb = (z[..., self.change] - t) * torch.exp(-s)
        return z.index_copy(-1, self.change, xb)


class ConditionalRealNVP(nn.Module):
    """y -> z through ``layers`` x [ActNorm?, AffineCoupling]; masks alternate even / odd."""

    def __init__(self, dim: int, cond_dim: int, layers: int, hidden: int, scale_clamp: float, actnorm: bool) -> None:
        super().__init__()
        self.dim = dim
        self.couplings = nn.ModuleList(
            AffineCoupling(dim, cond_dim, hidden, i % 2, scale_clamp) for i in range(layers)
        )
        self.norms = nn.ModuleList(ActNorm(dim) for _ in range(layers)) if actnorm else None

    def forward(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(R, D), (R, Dp) -> z (R, D), ActNorm log-det (scalar), coupling log-det (R,)."""
        z = y
        ld_act = y.new_zeros(())
        ld_coup = y.new_zeros(y.shape[:-1])
        for i, coupling in enumerate(self.couplings):
            if self.norms is not None:
                z, ld = self.norms[i](z)
                ld_act = ld_act + ld
            z, ld = coupling(z, h)
            ld_coup = ld_coup + ld
        return z, ld_act, ld_coup

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(R, D), (R, Dp) -> y (R, D): the layers undone in reverse order."""
        y = z
        for i in reversed(range(len(self.couplings))):
            y = cast(AffineCoupling, self.couplings[i]).inverse(y, h)
            if self.norms is not None:
                y = cast(ActNorm, self.norms[i]).inverse(y)
        return y

    def log_prob(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(R, D), (R, Dp) -> log p(y | h) (R,), ActNorm log-det (scalar), coupling log-det (R,)."""
        z, ld_act, ld_coup = self(y, h)
        base = -0.5 * z.pow(2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)  # log N(z; 0, I)
        return base + ld_act + ld_coup, ld_act, ld_coup


def _validate(layers: int, hidden: int, scale_clamp: float) -> None:
    for name, value in (("layers", layers), ("hidden", hidden)):
        check_option(is_count(value), name, value, "must be an integer >= 1")
    check_option(not isinstance(scale_clamp, bool) and isinstance(scale_clamp, (int, float)) and scale_clamp > 0,
                 "scale_clamp", scale_clamp, "must be a number > 0")


@HEADS.register("flow")
class FlowHead(PredictorHead):
    """Conditional RealNVP: exact log p(y | h) by the change of variables, trained by per-dimension NLL."""

    has_log_prob = True

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        layers: int = 6,
        hidden: int = 256,
        scale_clamp: float = 2.0,
        actnorm: bool = True,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        _validate(layers, hidden, scale_clamp)
        self.flow = ConditionalRealNVP(embed_dim, cond_dim, layers, hidden, float(scale_clamp), bool(actnorm))

    def log_prob(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with full_precision(h):
            lp, _, _ = self.flow.log_prob(y.float(), h.float())  # (B, M)
        return lp

    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        with full_precision(h):
            lp, ld_act, ld_coup = self.flow.log_prob(y.float(), h.float())  # (B, M), (), (B, M)
        nll = -lp.mean() / self.embed_dim
        diag: Diagnostics = {
            "nll": nll.detach(),
            "logdet": (ld_act + ld_coup).mean().detach(),
            "logdet_actnorm": ld_act.detach(),
            "logdet_coupling": ld_coup.mean().detach(),
        }
        return nll, diag

    @torch.no_grad()
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, M, Dp) -> (n, B, M, D): z ~ N(0, I) through the inverse, all n * B * M rows in one batch."""
        z, rows = base_draws(h, n, self.embed_dim, generator)
        with full_precision(h):
            y = self.flow.inverse(z, rows.float())
        return y.reshape(n, *h.shape[:-1], self.embed_dim)

    @torch.no_grad()
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, M, Dp) -> (B, M, D): f^-1(0, h), the image of the base mode."""
        zeros = torch.zeros((*h.shape[:-1], self.embed_dim), device=h.device)
        with full_precision(h):
            return self.flow.inverse(zeros, h.float())
