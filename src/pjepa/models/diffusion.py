"""Gaussian diffusion over embeddings: the noise schedule, the forward process and DDIM sampling.

One schedule, used for training noise and for sampling alike, so the two
always agree on what "step t" means (a building block: torch only).

Schedules (abar_t = prod_{s<=t} (1 - beta_s), t = 0..T-1):

- ``linear`` (Ho et al. 2020): beta_t evenly spaced from beta_start to beta_end,
  **rescaled to T** as in improved DDPM (Nichol & Dhariwal 2021; the
  ``get_named_beta_schedule("linear", T)`` of their improved-diffusion code):
      scale = 1000 / T,  beta_t in [beta_start * scale, beta_end * scale].
  Ho et al.'s range 1e-4..0.02 is tuned for T = 1000, where abar_T = 4e-5.
  Kept unscaled at T = 100 the process stops at abar_T = 0.36, far from noise,
  while sampling starts from x_T ~ N(0, I): a T ablation would then measure
  that mismatch, not T. Rescaled, abar_T stays near 0 for every T (8e-6 at
  T = 50, 2e-5 at 100, 3e-5 at 250, 4e-5 at 1000), and T = 1000 is bit for
  bit Ho et al.'s schedule. T must exceed 1000 * beta_end (20 at the default),
  else the last rescaled beta reaches 1.
- ``cosine`` (Nichol & Dhariwal 2021, eq. 17):
      abar(t) = f(t) / f(0),  f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2,
  realised through beta_t = 1 - abar(t+1) / abar(t), clipped at 0.999 (their
  sec. 3.2: keeps the last steps from being singular). abar_T ~ 2e-9 at
  T = 1000, 2e-7 at T = 100 (the clipped last beta).

Forward process (Ho et al. 2020, eq. 4):
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,  eps ~ N(0, I).

DDIM with eta = 0 (Song et al. 2021, eq. 12): from x_t with the predicted noise
eps_hat,
    x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
    x_{t'} = sqrt(abar_{t'}) x0_hat + sqrt(1 - abar_{t'}) eps_hat,
over evenly spaced steps T-1 -> ... -> 0, and abar = 1 after the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from pjepa.errors import ConfigError

#: The schedules ``DiffusionSchedule.from_options`` knows, by name.
SCHEDULES = ("linear", "cosine")
#: The step count Ho et al.'s beta range was tuned for; ``linear`` rescales to it.
REFERENCE_T = 1000
#: Largest beta of the cosine schedule (Nichol & Dhariwal 2021, sec. 3.2).
MAX_BETA = 0.999

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps_fn(x_t (R, ..., D), t (R, ...) long) -> eps_hat


def linear_beta_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """(T,) float64 abar_t for betas evenly spaced in [beta_start, beta_end], taken as given (no rescaling).

    This is Ho et al.'s formula verbatim; ``DiffusionSchedule.linear`` calls it
    with the range rescaled to T. Use that one unless you want the raw range.
    """
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced, strictly decreasing steps from T-1 down to 0 (``steps`` of them when steps <= T)."""
    ts = torch.linspace(T - 1, 0, steps, device="cpu").round().long().tolist()  # cpu: .tolist() under meta too
    return sorted(set(ts), reverse=True)


@dataclass(frozen=True, eq=False)  # eq=False: a tensor field has no truth value
class DiffusionSchedule:
    """A noise schedule: ``abar`` (T,) with abar[t] = prod_{s<=t} (1 - beta_s), and its ``name``.

    Build one with ``linear``, ``cosine`` or ``from_options``. ``abar`` is
    float64 from the constructors; the head keeps a float32 copy as a buffer
    (so it follows ``.to(device)``) and wraps it with ``DiffusionSchedule(name, abar)``.
    """

    name: str
    abar: torch.Tensor  # (T,)

    @property
    def T(self) -> int:
        return self.abar.shape[0]

    @classmethod
    def linear(cls, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiffusionSchedule:
        """Ho et al.'s linear betas, rescaled to T: [beta_start, beta_end] * 1000 / T (Nichol & Dhariwal 2021)."""
        if T < 2:
            raise ConfigError(f"linear diffusion schedule with T={T}: need T >= 2 steps")
        scale = REFERENCE_T / T  # exactly 1.0 at T = 1000, so that schedule is unchanged bit for bit
        lo, hi = beta_start * scale, beta_end * scale
        if not 0 < lo < hi < 1:
            raise ConfigError(f"linear diffusion schedule with T={T}, beta_start={beta_start}, beta_end={beta_end}: "
                              f"the betas rescaled by 1000/T are [{lo:g}, {hi:g}]; need 0 < start < end < 1 "
                              "(more steps, or smaller betas)")
        return cls("linear", linear_beta_schedule(T, lo, hi))

    @classmethod
    def cosine(cls, T: int, s: float = 0.008) -> DiffusionSchedule:
        """Nichol & Dhariwal 2021, eq. 17, with beta_t = 1 - abar(t+1) / abar(t) clipped at 0.999."""
        if T < 2 or s <= 0:
            raise ConfigError(f"cosine diffusion schedule with T={T}, s={s}: need T >= 2 and s > 0")
        u = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,) the times 0, 1/T, ..., 1
        f = torch.cos((u + s) / (1 + s) * (math.pi / 2)) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)  # (T,)
        return cls("cosine", torch.cumprod(1 - betas, dim=0))

    @classmethod
    def from_options(cls, name: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiffusionSchedule:
        """The schedule a diffusion head's ``schedule`` option names (``cosine`` ignores the betas)."""
        if name not in SCHEDULES:
            raise ConfigError(f"head.options.schedule={name!r}: choose one of {', '.join(SCHEDULES)}")
        if name == "cosine":
            return cls.cosine(T)
        if beta_end * REFERENCE_T / T >= 1:  # the rescaled last beta would make abar_T = 0 (or negative)
            raise ConfigError(f"head.options.timesteps={T}: the linear schedule rescales beta_end={beta_end} to "
                              f"{beta_end * REFERENCE_T / T:g} >= 1; use timesteps > {REFERENCE_T * beta_end:g} "
                              "or schedule: cosine")
        return cls.linear(T, beta_start, beta_end)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4).

        x0, noise: (..., D); t: long steps in 0..T-1 of shape x0.shape[:-1] (one
        step per row of D coordinates, e.g. (B, M) for (B, M, D) targets).
        """
        ab = self.abar[t].unsqueeze(-1)  # (..., 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, schedule: DiffusionSchedule, x: torch.Tensor, steps: int,
                clip_x0: float = 0.0) -> torch.Tensor:
    """Run DDIM (eta = 0, Song et al. 2021, eq. 12) from x = x_T: (..., D) -> (..., D) samples x_0.

    ``eps_fn(x_t, t)`` predicts the noise, with t a long tensor of shape
    x.shape[:-1] holding the current step; it is called once per step.
    ``clip_x0 > 0`` clamps x0_hat to +-clip_x0 and recomputes eps_hat from the
    clamped x0_hat, so the next step stays on the same DDIM trajectory: without
    it an untrained denoiser's error is amplified by 1/sqrt(abar_T) at the
    first steps (160 for linear T = 1000, 2e4 for cosine). 0 turns clipping off.
    """
    abar = schedule.abar
    ts = ddim_timesteps(schedule.T, steps)
    for i, t in enumerate(ts):
        ab = abar[t]  # () tensor, abar's dtype
        ab_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)  # abar = 1 after the last step
        eps_hat = eps_fn(x, torch.full(x.shape[:-1], t, device=x.device))
        x0_hat = (x - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
        if clip_x0 > 0:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps_hat = (x - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        x = ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat
    return x
