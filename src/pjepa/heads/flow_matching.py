"""Flow-matching head: a conditional velocity field from N(0, I) to the targets.

Conditional flow matching (Lipman et al. 2023, "Flow Matching for Generative
Modeling", eqs. 20-23) on the optimal-transport path with sigma_min = 0, i.e.
rectified flow (Liu et al. 2023, "Flow Straight and Fast: Learning to Generate
and Transfer Data with Rectified Flow"):
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

Configs of earlier releases wrote this head as ``head.name: flow`` with
``objective: flow_matching``; they are migrated when read
(``pjepa.config.migrate_flow_head``) and their checkpoints load unchanged:
the parameters keep their names (``field.*``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.heads.base import Diagnostics, PredictorHead, check_option, is_count
from pjepa.heads.layers import ResidualMLPBlock, base_draws, sinusoidal_embedding
from pjepa.heads.registry import HEADS

SOLVERS = ("euler", "midpoint")


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


def _validate(hidden: int, ode_steps: int, solver: str, fm_blocks: int) -> None:
    check_option(solver in SOLVERS, "solver", solver, f"choose one of {', '.join(SOLVERS)}")
    for name, value in (("hidden", hidden), ("ode_steps", ode_steps), ("fm_blocks", fm_blocks)):
        check_option(is_count(value), name, value, "must be an integer >= 1")


@HEADS.register("flow_matching")
class FlowMatchingHead(PredictorHead):
    """Conditional flow matching: a velocity field on straight noise-to-target paths, sampled by an ODE."""

    has_log_prob = False

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        hidden: int = 256,
        ode_steps: int = 20,
        solver: str = "midpoint",
        fm_blocks: int = 3,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        _validate(hidden, ode_steps, solver, fm_blocks)
        self.ode_steps, self.solver = ode_steps, solver
        self.field = VelocityField(embed_dim, cond_dim, hidden, fm_blocks)

    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
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

    @torch.no_grad()
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, M, Dp) -> (n, B, M, D): ``ode_steps`` solver steps from N(0, I), all n * B * M rows in one batch."""
        z, rows = base_draws(h, n, self.embed_dim, generator)
        return self._integrate(z, rows).reshape(n, *h.shape[:-1], self.embed_dim)

    @torch.no_grad()
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, M, Dp) -> (B, M, D): v(0, 0, h), the model's E[y | h]."""
        zeros = torch.zeros((*h.shape[:-1], self.embed_dim), device=h.device)
        return self.field(zeros, zeros[..., 0], h).float()
