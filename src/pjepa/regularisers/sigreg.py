"""SIGReg (Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
the Heuristics", sec. 4): push the student's features toward an isotropic standard Gaussian.

Sketched: project the T samples x_n in R^D on K random unit directions a_k, then test each
1-D projection against N(0, 1) with the Epps-Pulley statistic, which compares the empirical
characteristic function with the Gaussian's, exp(-t^2 / 2):

    EP_k = T * int |phi_T(t) - exp(-t^2/2)|^2 w(t) dt,   phi_T(t) = 1/T sum_n exp(i t a_k.x_n),
    w(t) = exp(-t^2 / 2);    SIGReg = 1/K sum_k EP_k.

The integrand is even in t, so it is integrated on [0, t_max] with the trapezoid rule over
``knots`` points and doubled (17 knots on [0, 3] in LeJEPA). |phi_T - phi|^2 splits into
(mean cos(t a.x) - exp(-t^2/2))^2 + (mean sin(t a.x))^2. For samples drawn from N(0, I) the
statistic stays O(1) whatever T is; for a collapsed or low-rank set it grows like T.

Directions are drawn fresh every step from a CPU generator seeded by the step alone: a
resumed run draws the same ones (bit-exact resume), and every DDP rank draws the same ones.
Under DDP the empirical characteristic function (the means of cos and sin) is averaged over
ranks with a differentiable all-reduce before the statistic is formed, so each rank computes
the statistic of the global batch (T summed over ranks); DDP's gradient averaging then gives
exactly that statistic's gradient.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from pjepa.errors import ConfigError
from pjepa.regularisers.base import REGULARISERS, Regulariser, check_level, samples_at_level

#: Added to the step when seeding the directions' generator (keeps them apart from other step-seeded draws).
DIRECTION_SALT = 0x5163_9E60


def random_directions(dim: int, num_slices: int, step: int) -> torch.Tensor:
    """(dim, num_slices) unit columns, a pure function of (dim, num_slices, step)."""
    g = torch.Generator().manual_seed(DIRECTION_SALT + int(step))
    a = torch.randn(dim, num_slices, generator=g)
    return a / a.norm(dim=0, keepdim=True)


def trapezoid_knots(knots: int, t_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t (J,), phi(t) = exp(-t^2/2) (J,), weights (J,)): knots on [0, t_max], trapezoid weights doubled
    for the even integrand, times the window w(t) = exp(-t^2/2)."""
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float64)
    dt = t_max / (knots - 1)
    trap = torch.full((knots,), 2 * dt, dtype=torch.float64)
    trap[[0, -1]] = dt
    phi = torch.exp(-t.square() / 2)
    return t.float(), phi.float(), (trap * phi).float()


def _global_mean(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(x averaged over DDP ranks with gradients, world size); (x, 1) outside DDP."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        world = dist.get_world_size()
        return all_reduce(x) / world, world
    return x, 1


def epps_pulley(proj: torch.Tensor, t: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(T, K) projections -> (K,) Epps-Pulley statistics against N(0, 1) (global over DDP ranks)."""
    x_t = proj.unsqueeze(-1) * t  # (T, K, J)
    cos_mean, world = _global_mean(torch.cos(x_t).mean(dim=0))  # (K, J)
    sin_mean, _ = _global_mean(torch.sin(x_t).mean(dim=0))  # (K, J)
    err = (cos_mean - phi).square() + sin_mean.square()  # (K, J)
    return (err @ weights) * (proj.shape[0] * world)


@REGULARISERS.register("sigreg")
class SIGReg(Regulariser):
    """``weight * SIGReg`` of the student's features at ``level``.

    Options: weight (> 0; this loss is ``prediction + weight * SIGReg``, so LeJEPA's
    lambda in ``lambda * SIGReg + (1 - lambda) * prediction`` is weight / (1 + weight)),
    num_slices (random directions per step, K), knots and t_max (the quadrature),
    level (``image``, LeJEPA's: one sample per image; or ``token``).
    """

    t: torch.Tensor  # buffers: the quadrature of the Epps-Pulley statistic
    phi: torch.Tensor
    weights: torch.Tensor
    label = "SIGReg"

    def __init__(self, weight: float = 0.05, num_slices: int = 256, knots: int = 17, t_max: float = 3.0,
                 level: str = "image") -> None:
        super().__init__()
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"reg.options.weight={weight!r}: need a finite weight > 0 (reg.name=none for no term)")
        if num_slices < 1:
            raise ConfigError(f"reg.options.num_slices={num_slices!r}: need an integer >= 1 (LeJEPA: 256-1024)")
        if knots < 3:
            raise ConfigError(f"reg.options.knots={knots!r}: need an integer >= 3 (LeJEPA: 17)")
        if not (math.isfinite(t_max) and t_max > 0):
            raise ConfigError(f"reg.options.t_max={t_max!r}: need a finite number > 0 (LeJEPA: 3)")
        self.weight, self.num_slices, self.level = weight, num_slices, check_level(level)
        t, phi, w = trapezoid_knots(knots, t_max)
        # Not saved: they follow from the options, and checkpoints keep the same keys with any regulariser.
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("phi", phi, persistent=False)
        self.register_buffer("weights", w, persistent=False)

    def statistic(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """(T, D) samples -> the SIGReg statistic (mean Epps-Pulley over this step's directions)."""
        a = random_directions(x.shape[1], self.num_slices, step).to(x.device)  # (D, K)
        return epps_pulley(x @ a, self.t, self.phi, self.weights).mean()

    def forward(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(z.device.type, enabled=False):  # cos/sin of large arguments want fp32
            stat = self.statistic(samples_at_level(z, self.level), step)
        return self.weight * stat, {"reg/sigreg": stat.detach()}
