"""Flow head: a conditional normalizing flow (exact NLL) or conditional flow matching.

``objective: nll`` -- conditional RealNVP (Dinh et al. 2017, "Density estimation
using Real NVP"). The forward map f(., h) sends a target y to a base sample z
through ``layers`` steps of [ActNorm (Kingma & Dhariwal 2018, optional)] then
an affine coupling (Dinh et al. 2017, eqs. 4-6). A coupling splits the
coordinates by a binary mask (even / odd, flipping each layer) into a kept part
a and a changed part b:
    s, t = net([y_a, h]),   s <- c * tanh(s / c)      (soft clamp, c = scale_clamp)
    z_a = y_a,              z_b = y_b * exp(s) + t,     log|det| = sum(s)
and the change of variables (Dinh et al. 2017, eq. 3) gives the exact density
    log p(y | h) = log N(f(y, h); 0, I) + sum_layers log|det d f_l / d x|.
The loss is the per-dimension NLL, mean over tokens of -log p(y | h) / D.
``sample`` pushes z ~ N(0, I) through the inverse; ``predict`` is f^-1(0, h),
the image of the base mode (cheap and deterministic; neither the mean nor
necessarily the mode of p(y | h), since the Jacobian reweights densities).

``objective: flow_matching`` -- conditional flow matching (Lipman et al. 2023,
"Flow Matching for Generative Modeling", eqs. 20-23) on the optimal-transport
path with sigma_min = 0, i.e. rectified flow (Liu et al. 2023):
    x0 ~ N(0, I),  t ~ U(0, 1),  x_t = (1 - t) x0 + t y,  u = y - x0
    loss = || v_theta(x_t, t, h) - u ||^2          (mean over tokens and dims)
``sample`` integrates dx/dt = v_theta(x, t, h) from t = 0 (x ~ N(0, I)) to 1
with ``ode_steps`` Euler or midpoint steps. ``predict`` uses that x_0 is
independent of y at t = 0, so the regression target gives
    v*(x0, 0, h) = E[y - x0 | x0, h] = E[y | h] - x0,
hence E[y | h] = x0 + v(x0, 0, h) for any x0; we return v(0, 0, h), the
model's estimate of the conditional mean (which falls between the modes of a
multi-modal p(y | h), like the deterministic head). No exact likelihood here:
``has_log_prob`` is False and ``log_prob`` raises.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.heads.base import Diagnostics, PredictorHead, check_option, full_precision, is_count
from pjepa.heads.layers import ActNorm, ResidualMLPBlock, sinusoidal_embedding
from pjepa.heads.registry import HEADS

OBJECTIVES = ("nll", "flow_matching")
SOLVERS = ("euler", "midpoint")


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

    def __init__(self, dim: int, cond_dim: int, hidden: int, parity: int, scale_clamp: float) -> None:
        super().__init__()
        keep, change = coupling_split(dim, parity)
        self.register_buffer("keep", keep, persistent=False)
        self.register_buffer("change", change, persistent=False)
        self.scale_clamp = scale_clamp
        self.net = nn.Sequential(
            nn.Linear(keep.numel() + cond_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2 * change.numel()),
        )
        # Near-zero (not zero) output layer: the flow starts ~ the identity, yet d loss / d h != 0.
        nn.init.trunc_normal_(self.net[-1].weight, std=1e-3)
        nn.init.zeros_(self.net[-1].bias)

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
            y = self.couplings[i].inverse(y, h)
            if self.norms is not None:
                y = self.norms[i].inverse(y)
        return y

    def log_prob(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(R, D), (R, Dp) -> log p(y | h) (R,), ActNorm log-det (scalar), coupling log-det (R,)."""
        z, ld_act, ld_coup = self(y, h)
        base = -0.5 * z.pow(2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)  # log N(z; 0, I)
        return base + ld_act + ld_coup, ld_act, ld_coup


class VelocityField(nn.Module):
    """v_theta(x, t, h): (R, D), (R,) times in [0, 1], (R, Dp) -> (R, D).

    x is projected to the width and h is added to it (so gradients reach h even
    though every block starts as the identity); the blocks are FiLM-modulated
    by c = proj(h) + MLP(sinusoidal(1000 t)).
    """

    def __init__(self, dim: int, cond_dim: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(dim, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden)  # additive path of h into the stream
        self.cond = nn.Linear(cond_dim, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden, hidden) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.out.weight, std=0.02)
        nn.init.zeros_(self.out.bias)

    def encode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, Dp) -> the two h projections (R, W), computed once per ODE solve."""
        return self.cond_in(h), self.cond(h)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, enc: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(R, D), times (R,) or (1,) (broadcast), encode(h) -> (R, D)."""
        h_in, h_cond = enc
        c = h_cond + self.t_mlp(sinusoidal_embedding(1000.0 * t, self.hidden))  # (R, W)
        a = self.inp(x) + h_in
        for block in self.blocks:
            a = block(a, c)
        return self.out(self.out_norm(a))

    def forward(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.velocity(x, t, self.encode(h))


def _validate(objective: str, layers: int, hidden: int, scale_clamp: float, ode_steps: int, solver: str,
              fm_blocks: int) -> None:
    check_option(objective in OBJECTIVES, "objective", objective, f"choose one of {', '.join(OBJECTIVES)}")
    check_option(solver in SOLVERS, "solver", solver, f"choose one of {', '.join(SOLVERS)}")
    for name, value in (("layers", layers), ("hidden", hidden), ("ode_steps", ode_steps), ("fm_blocks", fm_blocks)):
        check_option(is_count(value), name, value, "must be an integer >= 1")
    check_option(not isinstance(scale_clamp, bool) and isinstance(scale_clamp, (int, float)) and scale_clamp > 0,
                 "scale_clamp", scale_clamp, "must be a number > 0")


@HEADS.register("flow")
class FlowHead(PredictorHead):
    """Conditional RealNVP (``objective: nll``) or conditional flow matching (``flow_matching``)."""

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        objective: str = "nll",
        layers: int = 6,
        hidden: int = 256,
        scale_clamp: float = 2.0,
        actnorm: bool = True,
        ode_steps: int = 20,
        solver: str = "midpoint",
        fm_blocks: int = 3,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        _validate(objective, layers, hidden, scale_clamp, ode_steps, solver, fm_blocks)
        self.objective, self.ode_steps, self.solver = objective, ode_steps, solver
        self.has_log_prob = objective == "nll"
        if self.has_log_prob:
            self.flow = ConditionalRealNVP(embed_dim, cond_dim, layers, hidden, float(scale_clamp), bool(actnorm))
        else:
            self.field = VelocityField(embed_dim, cond_dim, hidden, fm_blocks)

    # ---- nll -------------------------------------------------------------------------------
    def log_prob(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.has_log_prob:
            return super().log_prob(h, y)
        with full_precision(h):
            lp, _, _ = self.flow.log_prob(y.float(), h.float())  # (B, M)
        return lp

    def _nll_loss(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Diagnostics]:
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

    # ---- flow matching ---------------------------------------------------------------------
    def _fm_loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, Diagnostics]:
        y = y.float()
        x0 = torch.randn(y.shape, generator=generator, device=y.device)  # (B, M, D)
        t = torch.rand(y.shape[:-1], generator=generator, device=y.device)  # (B, M)
        xt = (1 - t.unsqueeze(-1)) * x0 + t.unsqueeze(-1) * y
        v = self.field(xt, t, h)  # (B, M, D)
        mse = F.mse_loss(v.float(), y - x0)
        return mse, {"fm_mse": mse.detach()}

    def _integrate(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(R, D) x0 ~ N(0, I), (R, Dp) -> (R, D) x1 by ``ode_steps`` of dx/dt = v(x, t, h)."""
        enc = self.field.encode(h)
        dt = 1.0 / self.ode_steps
        for k in range(self.ode_steps):
            t = x.new_full((1,), k * dt)  # one time for all rows: its embedding broadcasts over (R, W)
            v = self.field.velocity(x, t, enc).float()
            if self.solver == "midpoint":
                v = self.field.velocity(x + 0.5 * dt * v, t + 0.5 * dt, enc).float()
            x = x + dt * v
        return x

    # ---- interface -------------------------------------------------------------------------
    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        return self._nll_loss(h, y) if self.has_log_prob else self._fm_loss(h, y, generator)

    @torch.no_grad()
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, M, Dp) -> (n, B, M, D); all n * B * M rows in one batch."""
        lead, D = h.shape[:-1], self.embed_dim
        z = torch.randn((n, *lead, D), generator=generator, device=h.device).reshape(-1, D)  # (n*B*M, D)
        rows = h.reshape(1, -1, h.shape[-1]).expand(n, -1, -1).reshape(z.shape[0], -1)  # (n*B*M, Dp)
        if self.has_log_prob:
            with full_precision(h):
                y = self.flow.inverse(z, rows.float())
        else:
            y = self._integrate(z, rows)
        return y.reshape(n, *lead, D)

    @torch.no_grad()
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, M, Dp) -> (B, M, D): f^-1(0, h) for nll; v(0, 0, h) ~ E[y | h] for flow matching."""
        zeros = torch.zeros((*h.shape[:-1], self.embed_dim), device=h.device)
        if self.has_log_prob:
            with full_precision(h):
                return self.flow.inverse(zeros, h.float())
        return self.field(zeros, zeros[..., 0], h).float()
