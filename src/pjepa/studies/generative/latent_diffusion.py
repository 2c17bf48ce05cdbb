"""Latent diffusion over (B, C, K, K) VAE latents: DDPM training, DDIM sampling, classifier-free guidance.

jepa-embeddings-generative-study, sec. 3, eq. 2 (latent diffusion's L_LDM):
    L = E_{z0 = E(x), eps ~ N(0, I), t} || eps - eps_theta(z_t, t, y) ||^2,
    z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps,  t ~ U{0..T-1}
(Ho et al. 2020, eq. 14, the "simple" loss, as a mean over elements). The
network may instead predict x0 or v (``prediction``; the document's is eps)
with the same plain MSE on that target. Sampling: "DDIM sampler ... 200 steps"
(sec. 4.3), the default here; fewer steps, and DPM-Solver++(2M), are options.

The schedule, the forward process, the prediction targets and the samplers
are the project's one implementation, ``pjepa.models.diffusion`` (the same the
diffusion head uses): ``DiffusionSchedule.q_sample`` for the training noise,
``prediction_target`` / ``split_prediction`` for the parametrisation and
``sample_ode`` for sampling. ``sample_ode`` treats the last axis as the
features of one step, so latents travel through it flattened to (B, C*K*K),
one step per image, and are reshaped for the UNet.

Classifier-free guidance (Ho & Salimans 2022, eq. 6, their w):
    out = out_uncond + (1 + w) * (out_cond - out_uncond),
so w = 0 is the plain conditional model. Latent diffusion's code writes the
same with scale s = 1 + w (``unconditional_guidance_scale``; s = 1 is off).
Guidance acts on the network output; for every parametrisation eps_hat is
affine in that output with coefficients shared by both branches, so this is
guidance on eps_hat. Training drops labels to the null label with probability
``p_uncond`` (0.1; Ho & Salimans use 0.1-0.2) so one network learns both.
The document trains class-conditional models but does not state a guidance
scale; ``guidance`` defaults to 0 (the conditional model, unguided).

Latents should be unit-scale (``pjepa.studies.generative.vae.LatentNorm``): the
schedule's end point abar_T ~ 4e-5 is near N(0, I) only for O(1) data.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import pjepa.models.diffusion as diffusion
from pjepa.errors import ConfigError
from pjepa.models.diffusion import PREDICTIONS, DiffusionSchedule, prediction_target, split_prediction

#: The document's sampler and step count (sec. 4.3).
DEFAULT_SAMPLER, DEFAULT_STEPS = "ddim", 200


class LatentDiffusion(nn.Module):
    """A denoiser ``unet(z_t (B, C, K, K), t (B,), labels (B,) | None)`` trained and sampled on ``schedule``.

    ``unet.num_classes`` > 0 makes the model class-conditional, with label
    ``num_classes`` as the null label (``pjepa.studies.generative.unet.UNet``).
    ``clip_x0`` > 0 clamps x0_hat while sampling (``sample_ode``); 0 (default)
    leaves it free, as latent diffusion does for latents.
    """

    abar: torch.Tensor  # a buffer: the cumulative alpha products of the schedule

    def __init__(self, unet: nn.Module, schedule: DiffusionSchedule, prediction: str = "eps",
                 p_uncond: float = 0.1, clip_x0: float = 0.0) -> None:
        super().__init__()
        if not isinstance(schedule, DiffusionSchedule):
            raise ConfigError(f"latent diffusion schedule {type(schedule).__name__}: pass a "
                              "pjepa.models.diffusion.DiffusionSchedule (DiffusionSchedule.from_options)")
        if prediction not in PREDICTIONS:
            raise ConfigError(f"latent diffusion prediction={prediction!r}: choose one of {', '.join(PREDICTIONS)} "
                              "(the document's is eps)")
        if not 0 <= p_uncond < 1:
            raise ConfigError(f"latent diffusion p_uncond={p_uncond}: the label-drop probability must be in [0, 1)")
        if clip_x0 < 0:
            raise ConfigError(f"latent diffusion clip_x0={clip_x0}: use 0 (no clipping) or a positive bound")
        self.unet, self.prediction, self.p_uncond, self.clip_x0 = unet, prediction, p_uncond, clip_x0
        self.num_classes = int(getattr(unet, "num_classes", 0))
        self.schedule_name = schedule.name
        # Rebuilt from the options with the model, so not checkpointed; float32 and on the model's device.
        self.register_buffer("abar", schedule.abar.detach().float().clone(), persistent=False)

    @property
    def T(self) -> int:
        return self.abar.shape[0]

    def noise_schedule(self) -> DiffusionSchedule:
        """The schedule over the ``abar`` buffer: the one object both training and sampling use."""
        return DiffusionSchedule(self.schedule_name, self.abar)

    def _abar(self, t: torch.Tensor) -> torch.Tensor:
        return self.abar[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)

    def _labels(self, labels: torch.Tensor | None, what: str) -> torch.Tensor | None:
        if labels is not None and self.num_classes == 0:
            raise ConfigError(f"latent diffusion {what} got class labels, but the unet is unconditional "
                              "(num_classes=0); build the UNet with num_classes")
        if labels is not None and ((labels < 0) | (labels > self.num_classes)).any():
            raise ConfigError(f"latent diffusion {what} labels {labels.unique().tolist()}: need 0..{self.num_classes} "
                              f"({self.num_classes} is the null label)")
        return labels

    def loss(self, z0: torch.Tensor, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM's simple loss on (B, C, K, K) unit-scale latents: MSE to the ``prediction`` target (scalar)."""
        labels = self._labels(labels, "loss")
        if self.num_classes and labels is None:
            raise ConfigError("latent diffusion loss without labels on a class-conditional unet: pass the labels "
                              "(p_uncond drops them to the null label), or build the UNet with num_classes=0")
        B, dev = z0.shape[0], z0.device
        t = torch.randint(0, self.T, (B,), generator=generator, device=dev)
        eps = torch.randn(z0.shape, generator=generator, device=dev, dtype=z0.dtype)
        z_t = self.noise_schedule().q_sample(z0.flatten(1), t, eps.flatten(1)).view_as(z0)
        if labels is not None and self.p_uncond > 0:
            drop = torch.rand(B, generator=generator, device=dev) < self.p_uncond
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        out = self.unet(z_t, t, labels)
        return F.mse_loss(out, prediction_target(z0, eps, self._abar(t), self.prediction))

    def guided(self, z_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
               guidance: float = 0.0) -> torch.Tensor:
        """The network output with classifier-free guidance: uncond + (1 + w) (cond - uncond), w = ``guidance``.

        w = 0 (or no labels) is one plain pass; otherwise both branches run as one batch of 2B.
        """
        if labels is None or guidance == 0:
            return self.unet(z_t, t, labels)
        null = torch.full_like(labels, self.num_classes)
        cond, uncond = self.unet(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return uncond + (1 + guidance) * (cond - uncond)

    @torch.no_grad()
    def sample(self, n_or_labels: int | torch.Tensor, shape: tuple[int, int, int], steps: int = DEFAULT_STEPS,
               sampler: str = DEFAULT_SAMPLER, guidance: float = 0.0, generator: torch.Generator | None = None,
               spacing: str | None = None) -> torch.Tensor:
        """Samples (n, C, K, K) for ``shape`` = (C, K, K), unit-scale like the training latents.

        ``n_or_labels``: a count (unconditional; the null label on a
        class-conditional net) or (n,) long labels. ``spacing`` defaults to the
        sampler's own (``uniform`` for ddim, ``logsnr`` for dpmpp_2m). The
        starting noise comes from ``generator`` alone, and the ODE is
        deterministic, so one generator state gives one set of samples.
        """
        labels = n_or_labels if isinstance(n_or_labels, torch.Tensor) else None
        n = len(labels) if labels is not None else int(n_or_labels)
        labels = self._labels(None if labels is None else labels.to(self.abar.device).long(), "sample")
        if not 1 <= steps <= self.T:
            raise ConfigError(f"latent diffusion sampling steps={steps}: choose 1..{self.T} (the schedule's T); "
                              f"the document's is {DEFAULT_STEPS}")
        if guidance < 0 or (guidance > 0 and labels is None):
            raise ConfigError(f"latent diffusion guidance={guidance}: need >= 0, and class labels (a class-conditional "
                              "unet) when > 0")
        if n < 1 or len(shape) != 3:
            raise ConfigError(f"latent diffusion sample n={n}, shape={tuple(shape)}: need n >= 1 and shape (C, K, K)")
        spacing = spacing or ("uniform" if sampler == "ddim" else "logsnr")

        def denoise(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (n, C*K*K), (n,)
            z_t = x.view(n, *shape)
            x0, eps = split_prediction(self.guided(z_t, t, labels, guidance), z_t, self._abar(t), self.prediction)
            return x0.flatten(1), eps.flatten(1)

        x = torch.randn((n, shape[0] * shape[1] * shape[2]), generator=generator, device=self.abar.device)
        # Called through the module, so the one sampler of pjepa.models.diffusion is what runs (and is testable).
        out = diffusion.sample_ode(denoise, self.noise_schedule(), x, steps, sampler, spacing, self.clip_x0)
        return out.view(n, *shape)
