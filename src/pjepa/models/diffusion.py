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

DDIM is a first-order solver of the probability-flow ODE and, with few steps,
it shrinks the spread of what it samples: with the *exact* noise predictor of a
1-D Gaussian with standard deviation 0.5, 50 DDIM steps return 0.472 (25: 0.444,
200: 0.493; linear schedule, T = 1000). In x/sqrt(abar) against
sigma = sqrt((1 - abar) / abar) the ODE is dx/dsigma = eps_hat, and Euler's
step takes eps_hat at the step's start; where sigma is below the data's own
scale s each step shrinks x by an extra ~ dsigma^2 / (2 s^2), and evenly spaced
t give dsigma ~ 0.07 there. ``dpmpp_2m`` fixes this at the same cost (one
network pass per step): DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), a
second-order multistep solver in log-SNR lambda = log(sqrt(abar) / sqrt(1 - abar)),
    D_i = (1 + 1/(2 r)) x0_hat_i - 1/(2 r) x0_hat_{i-1},  r = h_{i-1} / h_i,
    x_{t'} = sqrt(abar_{t'}) D_i + sqrt((1 - abar_{t'}) / (1 - abar_t)) (x_t - sqrt(abar_t) D_i),
with h the lambda step, over steps evenly spaced in lambda (``logsnr``), and a
first-order (DDIM) first and last step. The same oracle then gives 0.501 at 50
steps and 0.505 at 25 (docs/results.md, "Diffusion head fidelity").

The network may predict the noise eps (Ho et al.), the clean x0, or the velocity
v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022);
``split_prediction`` turns any of them into the (x0_hat, eps_hat) pair the
samplers use. ``sinusoidal_embedding`` is the timestep embedding of every
denoiser here (the diffusion and flow heads, the generative study's UNet).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pjepa.errors import ConfigError

#: The schedules ``DiffusionSchedule.from_options`` knows, by name.
SCHEDULES = ("linear", "cosine")
#: The step count Ho et al.'s beta range was tuned for; ``linear`` rescales to it.
REFERENCE_T = 1000
#: Largest beta of the cosine schedule (Nichol & Dhariwal 2021, sec. 3.2).
MAX_BETA = 0.999
#: What the denoiser predicts: the noise, the clean sample, or the velocity (Salimans & Ho 2022).
PREDICTIONS = ("eps", "x0", "v")
#: ODE samplers: DDIM (first order, Song et al. 2021) and DPM-Solver++(2M) (second order, Lu et al. 2022).
SAMPLERS = ("ddim", "dpmpp_2m")
#: Where the sampling steps sit: evenly spaced in t, or evenly spaced in log-SNR.
SPACINGS = ("uniform", "logsnr")

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps_fn(x_t (R, ..., D), t (R, ...) long) -> eps_hat
#: denoise_fn(x_t (..., D), t (...) long) -> (x0_hat, eps_hat), each (..., D)
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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


def logsnr(abar: torch.Tensor) -> torch.Tensor:
    """lambda = log(sqrt(abar) / sqrt(1 - abar)), elementwise (the log signal-to-noise ratio / 2)."""
    return 0.5 * (torch.log(abar) - torch.log1p(-abar))


def logsnr_timesteps(abar: torch.Tensor, steps: int) -> list[int]:
    """``steps`` strictly decreasing steps from T-1 to 0, their log-SNR as evenly spaced as the grid allows.

    Each of ``steps`` evenly spaced lambda values maps to the step with the
    nearest lambda; where one step of t spans several of them (near t = 0, and
    the cosine schedule's clipped last betas) neighbours are pushed apart, so a
    sampler always makes exactly ``steps`` network passes (steps <= T).
    """
    T = abar.shape[0]
    lam = logsnr(abar.detach().double().cpu())  # (T,) increasing as t decreases
    targets = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)  # noisy -> clean
    nearest = (lam.unsqueeze(0) - targets.unsqueeze(1)).abs().argmin(dim=1).tolist()
    ts: list[int] = []
    for i, t in enumerate(nearest):  # step i leaves room for the steps-1-i after it, and strictly decreases
        t = min(max(t, steps - 1 - i), T - 1 - i)
        ts.append(t if not ts else min(t, ts[-1] - 1))
    return ts


def sampling_timesteps(abar: torch.Tensor, steps: int, spacing: str) -> list[int]:
    """The steps a sampler visits: ``uniform`` in t (Song et al.) or ``logsnr`` (Lu et al.)."""
    if spacing not in SPACINGS:
        raise ConfigError(f"diffusion step spacing {spacing!r}: choose one of {', '.join(SPACINGS)}")
    return ddim_timesteps(abar.shape[0], steps) if spacing == "uniform" else logsnr_timesteps(abar, steps)


def split_prediction(out: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor, prediction: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The network output ``out`` for x_t at abar ``ab`` (broadcastable) -> (x0_hat, eps_hat).

    eps: x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab);  x0: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab);
    v:   x0 = sqrt(ab) x_t - sqrt(1 - ab) v,  eps = sqrt(1 - ab) x_t + sqrt(ab) v.
    """
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if prediction == "eps":
        return (x_t - s * out) / a, out
    if prediction == "x0":
        return out, (x_t - a * out) / s
    if prediction == "v":
        return a * x_t - s * out, s * x_t + a * out
    raise ConfigError(f"diffusion prediction {prediction!r}: choose one of {', '.join(PREDICTIONS)}")


def prediction_target(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the network is trained to output for clean x0, noise eps at abar ``ab``: eps, x0 or v."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    raise ConfigError(f"diffusion prediction {prediction!r}: choose one of {', '.join(PREDICTIONS)}")


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

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_prediction(eps_fn(x_t, t), x_t, abar[t[(0,) * t.dim()]], "eps")

    return sample_ode(denoise, schedule, x, steps, "ddim", "uniform", clip_x0)


@torch.no_grad()
def sample_ode(denoise_fn: DenoiseFn, schedule: DiffusionSchedule, x: torch.Tensor, steps: int,
               sampler: str = "ddim", spacing: str = "uniform", clip_x0: float = 0.0) -> torch.Tensor:
    """Solve the probability-flow ODE from x = x_T: (..., D) -> (..., D) samples x_0.

    ``denoise_fn(x_t, t)`` returns (x0_hat, eps_hat) for a long step tensor t of
    shape x.shape[:-1]; it is called once per visited step (``sampling_timesteps``).
    ``sampler``: ``ddim`` (first order) or ``dpmpp_2m`` (second-order multistep
    in log-SNR; first order on its first and last step). ``clip_x0`` as in
    ``ddim_sample``: eps_hat is recomputed from the clamped x0_hat.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"diffusion sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    abar = schedule.abar
    ts = sampling_timesteps(abar, steps, spacing)
    # on the host, once: the per-step ratio r below is then plain arithmetic, not a device sync per step
    lam = logsnr(abar.detach().double().cpu()) if sampler == "dpmpp_2m" else None
    prev_x0 = None
    for i, t in enumerate(ts):
        ab = abar[t]  # () tensor, abar's dtype
        last = i + 1 == len(ts)
        ab_prev = torch.ones_like(ab) if last else abar[ts[i + 1]]  # abar = 1 after the last step
        x0_hat, eps_hat = denoise_fn(x, torch.full(x.shape[:-1], t, device=x.device))
        if clip_x0 > 0:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps_hat = (x - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        if lam is None:  # DDIM
            x = ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat
            continue
        d = x0_hat
        if prev_x0 is not None and not last:
            r = float((lam[t] - lam[ts[i - 1]]) / (lam[ts[i + 1]] - lam[t]))  # h_{i-1} / h_i
            d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev_x0
        prev_x0 = x0_hat
        x = ab_prev.sqrt() * d + ((1 - ab_prev) / (1 - ab)).sqrt() * (x - ab.sqrt() * d)
    return x


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(...,) timesteps (integer DDPM steps or continuous times) -> (..., dim).

    Vaswani et al. 2017 / Ho et al. 2020: cos/sin of t at geometrically spaced
    frequencies 1 .. 1/max_period. Continuous t in [0, 1] should be scaled up
    (e.g. by 1000) by the caller so the fast frequencies resolve it.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(-1) * freqs  # (..., half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
