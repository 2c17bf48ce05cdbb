"""Diffusion head: DDPM over target embeddings, DDIM sampling.

Training (Ho et al. 2020, eq. 14, the "simple" loss):
    t ~ U{0..T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps
    loss = || eps - eps_theta(x_t, t, h) ||^2          (mean over tokens and dims)
with abar_t = prod_{s<=t} (1 - beta_s) from ``pjepa.models.diffusion``, which
also holds the forward process and the DDIM sampler, so training and sampling
share one schedule. ``schedule: linear`` (default) is Ho et al.'s beta range
1e-4..0.02 at T = ``timesteps`` = 1000, and that range rescaled by 1000 / T at
other T (Nichol & Dhariwal 2021): unscaled, T = 100 would end at abar_T = 0.36,
far from the N(0, I) that sampling starts from, and a T ablation would measure
that mismatch. Rescaled, abar_T <= 4e-5 at every T (2e-5 at T = 100); T must
exceed 1000 * beta_end (20). ``schedule: cosine`` is Nichol & Dhariwal's
eq. 17 (``beta_start`` / ``beta_end`` unused).

The denoiser eps_theta is a residual MLP (optionally with self-attention over
the target tokens of one image): x_t and h are projected to the width, and a
condition c = proj(h) + MLP(sinusoidal(t)) FiLM-modulates every block.

``prediction`` chooses what the network outputs and is trained on with the same
plain MSE: ``v`` = sqrt(abar) eps - sqrt(1 - abar) y (default; Salimans & Ho
2022), ``eps`` (Ho et al., the report's) or ``x0``. On a 1-D Gaussian (std 0.5)
with DPM-Solver++(2M) at 50 steps, trained heads sampled std 1.005x / 0.999x the
truth with ``v`` (seeds 0 / 1), 1.105x / 1.082x with ``eps`` (an eps error is
amplified by 1 / sqrt(abar) ~ 160 into x0_hat at the noisy end), and ``x0``
collapsed each mode of the two-mode toy to a point (within-mode spread 0.007
against 0.05): ``benchmarks/diffusion_fidelity.py``, docs/results.md.

Sampling solves the probability-flow ODE in ``sample_steps`` network passes
(50 by default; 25 is the report's fast mode) with ``sampler``:
- ``dpmpp_2m`` (default): DPM-Solver++(2M) (Lu et al. 2022) over steps evenly
  spaced in log-SNR; with the exact denoiser of a 1-D Gaussian (std 0.5) it
  returns std 0.501 at 50 steps.
- ``ddim``: DDIM (Song et al. 2021, eq. 12 with eta = 0) over evenly spaced t,
      x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
      x_{t'} = sqrt(abar_{t'}) x0_hat + sqrt(1 - abar_{t'}) eps_hat,
  the report's sampler; it undershoots the spread (0.472 for that Gaussian at
  50 steps: ``pjepa.models.diffusion`` says why).
``spacing`` overrides the sampler's own step spacing (``uniform`` | ``logsnr``). x0_hat is
clipped to +-``clip_x0``, which keeps an untrained or early denoiser from
exploding through the 1/sqrt(abar_T) ~ 160 amplification at the first steps
(linear; ~ 2e4 for cosine).
The default 5 is the range of the layer-normed targets (measured on CIFAR-10:
0.5 % of coordinates beyond +-3, 0.004 % beyond +-5, max 5.2); on a 2,730-step
CIFAR-10 run, clipping at 10 / 5 / 3 / off gave sample MSE 27.7 / 8.0 / 3.3 / 406
(docs/results.md). There is no
exact likelihood (has_log_prob False); ``predict`` is the deterministic DDIM
trajectory started from x_T = 0, the mode of the prior.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.errors import ConfigError
from pjepa.heads.base import Diagnostics, PredictorHead, check_option, full_precision
from pjepa.heads.layers import ResidualMLPBlock, sinusoidal_embedding
from pjepa.heads.registry import HEADS
from pjepa.models.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    SCHEDULES,
    SPACINGS,
    DiffusionSchedule,
    ddim_timesteps,
    linear_beta_schedule,
    prediction_target,
    sample_ode,
    split_prediction,
)

__all__ = ["DiffusionHead", "ddim_timesteps", "linear_beta_schedule"]  # the last two: re-exported, older imports


class TokenAttention(nn.Module):
    """Pre-norm self-attention among the M target tokens of one image (residual)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (R, M, W) with R = any leading rows
        q = self.norm(x)
        return x + self.attn(q, q, q, need_weights=False)[0]


class Denoiser(nn.Module):
    """eps_theta(x_t, t, h): (R, M, D), (R, M) steps, (R, M, Dp) -> (R, M, D)."""

    def __init__(self, cond_dim: int, embed_dim: int, width: int, blocks: int, attention: bool, num_heads: int):
        super().__init__()
        self.t_dim = width
        self.inp = nn.Linear(embed_dim, width)
        self.cond_in = nn.Linear(cond_dim, width)  # h enters the stream directly, not only through FiLM
        self.cond = nn.Linear(cond_dim, width)
        self.t_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(ResidualMLPBlock(width, width) for _ in range(blocks))
        self.attn = nn.ModuleList(TokenAttention(width, num_heads) for _ in range(blocks)) if attention else None
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, embed_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        c = F.silu(self.cond(h) + self.t_mlp(sinusoidal_embedding(t, self.t_dim)))  # (R, M, W)
        z = self.inp(x) + self.cond_in(h)
        for i, block in enumerate(self.blocks):
            if self.attn is not None:
                z = self.attn[i](z)
            z = block(z, c)
        return self.out(self.out_norm(z))


@HEADS.register("diffusion")
class DiffusionHead(PredictorHead):
    abar: torch.Tensor  # a buffer: the cumulative alpha products of the schedule

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        sample_steps: int = 50,
        width: int = 256,
        blocks: int = 3,
        attention: bool = False,
        num_heads: int = 4,
        clip_x0: float = 5.0,
        schedule: str = "linear",
        prediction: str = "v",
        sampler: str = "dpmpp_2m",
        spacing: str | None = None,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        check_option(schedule in SCHEDULES, "schedule", schedule, f"choose one of {', '.join(SCHEDULES)}")
        check_option(prediction in PREDICTIONS, "prediction", prediction, f"choose one of {', '.join(PREDICTIONS)}")
        check_option(sampler in SAMPLERS, "sampler", sampler, f"choose one of {', '.join(SAMPLERS)}")
        check_option(spacing is None or spacing in SPACINGS, "spacing", spacing,
                     f"choose one of {', '.join(SPACINGS)}, or leave unset for the sampler's own")
        self.prediction, self.sampler = prediction, sampler
        self.spacing = spacing or ("uniform" if sampler == "ddim" else "logsnr")
        if timesteps < 2:
            raise ConfigError(f"head.options.timesteps={timesteps}: need at least 2 diffusion steps (default 1000)")
        if not 0 < beta_start < beta_end < 1:
            raise ConfigError(f"head.options.beta_start={beta_start}, beta_end={beta_end}: need 0 < start < end < 1")
        if clip_x0 < 0:
            raise ConfigError(f"head.options.clip_x0={clip_x0}: use 0 (no clipping) or a positive bound")
        self.T, self.clip_x0, self.schedule = timesteps, clip_x0, schedule
        self.sample_steps = self._check_steps(sample_steps)
        if attention and width % num_heads:
            raise ConfigError(f"head.options.width={width} must be divisible by head.options.num_heads={num_heads}")
        self.net = Denoiser(cond_dim, embed_dim, width, blocks, attention, num_heads)
        # Recomputed from the options, so not stored in checkpoints (persistent=False); float32 as in training.
        abar = DiffusionSchedule.from_options(schedule, timesteps, beta_start, beta_end).abar
        self.register_buffer("abar", abar.float(), persistent=False)

    def noise_schedule(self) -> DiffusionSchedule:
        """The schedule over the ``abar`` buffer (on the head's device, float32)."""
        return DiffusionSchedule(self.schedule, self.abar)

    def _check_steps(self, steps: int) -> int:
        if not 1 <= steps <= self.T:
            raise ConfigError(f"head.options.sample_steps={steps}: choose 1..timesteps ({self.T}); 50 or 25 (fast)")
        return steps

    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        with full_precision(h):
            h, y = h.float(), y.float()
            t = torch.randint(0, self.T, y.shape[:-1], generator=generator, device=y.device)  # (B, M)
            eps = torch.randn(y.shape, generator=generator, device=y.device)
            x_t = self.noise_schedule().q_sample(y, t, eps)  # (B, M, D)
            ab = self.abar[t].unsqueeze(-1)  # (B, M, 1)
            out = self.net(x_t, t, h)
            loss = F.mse_loss(out, prediction_target(y, eps, ab, self.prediction))
            x0_hat = split_prediction(out.detach(), x_t, ab, self.prediction)[0]
        return loss, self._diagnostics(y, x0_hat, ab)

    @staticmethod
    def _diagnostics(y: torch.Tensor, x0_hat: torch.Tensor, ab: torch.Tensor) -> Diagnostics:
        """Token MSE / cosine of the one-step denoised x0_hat, over the low-noise half (abar > 0.5).

        At high noise an eps-predicting x0_hat divides by sqrt(abar) ~ 0.006 and
        says nothing about the model; the shared head metrics give the full
        point-prediction error.
        """
        keep = (ab.squeeze(-1) > 0.5).float()  # (B, M)
        n = keep.sum().clamp_min(1)
        mse = ((x0_hat - y).pow(2).mean(-1) * keep).sum() / n
        cos = (F.cosine_similarity(x0_hat, y, dim=-1) * keep).sum() / n
        return {"x0_mse": mse.detach(), "x0_cos": cos.detach()}

    @torch.no_grad()
    def ddim(self, h: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Solve the ODE with the head's ``sampler`` from x = x_T: (R, M, Dp), (R, M, D) -> (R, M, D).

        (Named for the sampler it ran first; ``sampler: ddim`` is that one.)
        """
        with full_precision(h):
            h, x = h.float(), x.float()

            def denoise(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return split_prediction(self.net(x_t, t, h), x_t, self.abar[t].unsqueeze(-1), self.prediction)

            return sample_ode(denoise, self.noise_schedule(), x, steps, self.sampler, self.spacing, self.clip_x0)

    @torch.no_grad()
    def sample(
        self, h: torch.Tensor, n: int, generator: torch.Generator | None = None, steps: int | None = None
    ) -> torch.Tensor:
        steps = self.sample_steps if steps is None else self._check_steps(steps)
        B, M, _ = h.shape
        x = torch.randn((n * B, M, self.embed_dim), generator=generator, device=h.device)
        hh = h.unsqueeze(0).expand(n, *h.shape).reshape(n * B, M, -1)
        return self.ddim(hh, x, steps).reshape(n, B, M, self.embed_dim).to(h.dtype)

    @torch.no_grad()
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        x = torch.zeros((*h.shape[:-1], self.embed_dim), device=h.device)
        return self.ddim(h, x, self.sample_steps).to(h.dtype)
