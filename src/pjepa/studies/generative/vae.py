"""A VAE over encoder patch-embedding maps, and the latent normalisation the diffusion model trains on.

The study's step i (jepa-embeddings-generative-study, sec. 3 "Compressing
Encoder embeddings using VAE", and sec. 4.2): the frozen encoder's K x K x D
patch embeddings are compressed to K x K x d latents with d < D, trained with
a "very small KL loss weight of 0.05 to prevent biasing the latents too much
towards the standard normal" (d = 16 for D = 1280 at K = 16 in the document).

The document does not give the VAE's layers. Here encoder and decoder are
1 x 1 convolutions (a per-patch MLP): each patch's latent is a function of its
own embedding only, so the spatial structure is left entirely to the
diffusion UNet, and the VAE is cheap enough for K x K maps of any size.

Loss (Kingma & Welling 2014, eq. 10 with a weighted KL, beta-VAE style):
    total = MSE(x_hat, x) + kl_weight * KL,
    KL    = mean over (B, C, K, K) of 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2),
both terms **averaged per element** (MSE over the D embedding channels, KL over
the C latent channels). Latent diffusion's autoencoders (Rombach et al. 2022)
sum both terms over their elements instead; with per-element means the KL
counts D / C times (80 x at D = 1280, C = 16) more against the reconstruction
than the same weight under sums. The document does not say which it used.

Latent normalisation. A KL weight this small leaves the latents far from
N(0, I) (its purpose), but the diffusion forward process assumes unit-scale
data: x_T = sqrt(abar_T) z0 + sqrt(1 - abar_T) eps is close to the N(0, I) that
sampling starts from only when z0 is O(1), and every step's signal-to-noise
ratio abar / (1 - abar) is calibrated for unit variance. Latent diffusion
rescales its latents by one scalar 1 / std measured on the data (Rombach et al.
2022; ``scale_factor`` / ``scale_by_std`` in their code); the document follows
that recipe and does not state the statistics. ``LatentNorm`` standardises **per channel**
(mean and std over images and positions), which also removes channel offsets;
the statistics come from posterior *samples* by default, as latent diffusion
trains on samples, so a channel the VAE left unused (posterior = prior) has
std ~ 1 and is not blown up by a near-zero std of its means.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.errors import ConfigError

#: The document's KL weight (sec. 4.2).
KL_WEIGHT = 0.05
#: log sigma^2 is clamped to this range before use, as latent diffusion's Gaussian posterior does.
LOGVAR_RANGE = (-30.0, 20.0)

Losses = dict[str, torch.Tensor]


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element, averaged: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()


class EmbeddingVAE(nn.Module):
    """(B, D, K, K) embedding maps <-> (B, C, K, K) latents, with 1 x 1 convolutions (per patch).

    ``hidden`` is the width of the one hidden layer of encoder and decoder
    (default: ``embed_dim``). ``kl_weight`` weighs the per-element KL against
    the per-element MSE (module docstring).
    """

    def __init__(self, embed_dim: int, latent_channels: int = 16, hidden: int | None = None,
                 kl_weight: float = KL_WEIGHT) -> None:
        super().__init__()
        hidden = embed_dim if hidden is None else hidden
        for name, value in (("embed_dim", embed_dim), ("latent_channels", latent_channels), ("hidden", hidden)):
            if value < 1:
                raise ConfigError(f"vae {name}={value}: must be a positive number of channels")
        if kl_weight < 0:
            raise ConfigError(f"vae kl_weight={kl_weight}: must be >= 0 (the document's is {KL_WEIGHT})")
        if latent_channels >= embed_dim:
            raise ConfigError(f"vae latent_channels={latent_channels} >= embed_dim={embed_dim}: the VAE compresses "
                              f"(d < D); choose fewer latent channels (the document's 16 for D = 1280)")
        self.embed_dim, self.latent_channels, self.kl_weight = embed_dim, latent_channels, kl_weight
        self.encoder = nn.Sequential(nn.Conv2d(embed_dim, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, 2 * latent_channels, 1))
        self.decoder = nn.Sequential(nn.Conv2d(latent_channels, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, embed_dim, 1))

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, K, K) -> posterior mean, log variance, each (B, C, K, K)."""
        if x.dim() != 4 or x.shape[1] != self.embed_dim:
            raise ConfigError(f"vae input of shape {tuple(x.shape)}: expected (B, {self.embed_dim}, K, K) "
                              "embedding maps (channels first)")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def reparameterise(mean: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) drawn from ``generator``."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * eps

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, D, K, K) -> (B, C, K, K): a posterior sample, or its mean when ``sample`` is False."""
        mean, logvar = self.moments(x)
        return self.reparameterise(mean, logvar, generator) if sample else mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, K, K) latents -> (B, D, K, K) embedding maps."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruct through a posterior sample: (B, D, K, K) -> (B, D, K, K)."""
        return self.decode(self.encode(x, True, generator))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Losses]:
        """(B, D, K, K) -> (MSE + kl_weight * KL, {"recon": MSE, "kl": KL}), both per-element means."""
        mean, logvar = self.moments(x)
        recon = F.mse_loss(self.decode(self.reparameterise(mean, logvar, generator)), x)
        kl = kl_to_standard_normal(mean, logvar)
        return recon + self.kl_weight * kl, {"recon": recon.detach(), "kl": kl.detach()}


@torch.no_grad()
def latent_statistics(vae: EmbeddingVAE, embeddings: Iterable[torch.Tensor], sample: bool = True,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std, each (C,), of the VAE's latents over batches of (B, D, K, K) embeddings.

    Accumulated in float64 over every image and position, so the result does
    not depend on how the data are batched (up to the posterior samples drawn).
    """
    total = torch.zeros(3, vae.latent_channels, dtype=torch.float64)  # count, sum, sum of squares
    for x in embeddings:
        z = vae.encode(x, sample, generator).double().transpose(0, 1).flatten(1)  # (C, B*K*K)
        total += torch.stack([torch.full_like(z[:, 0], z.shape[1]), z.sum(1), z.pow(2).sum(1)]).cpu()
    n, s, sq = total
    if n[0] < 2:
        raise ConfigError(f"latent statistics from {int(n[0])} latent position(s): need at least 2 "
                          "(pass a non-empty dataset of embeddings)")
    mean = s / n
    std = ((sq - n * mean.pow(2)) / (n - 1)).clamp_min(0).sqrt()
    return mean.float(), std.float()


class LatentNorm(nn.Module):
    """z -> (z - mean) / std per channel over (B, C, K, K) latents, and back; statistics kept as buffers."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        super().__init__()
        if mean.shape != std.shape or mean.dim() != 1:
            raise ConfigError(f"latent norm mean {tuple(mean.shape)} and std {tuple(std.shape)}: need two (C,) tensors")
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clamp_min(eps))

    @classmethod
    def fit(cls, vae: EmbeddingVAE, embeddings: Iterable[torch.Tensor], sample: bool = True,
            generator: torch.Generator | None = None) -> LatentNorm:
        """The normalisation measured by ``latent_statistics`` over ``embeddings``."""
        return cls(*latent_statistics(vae, embeddings, sample, generator))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, K, K) VAE latents -> unit-scale latents for the diffusion model."""
        return (z - self.mean.view(-1, 1, 1)) / self.std.view(-1, 1, 1)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, K, K) diffusion samples -> VAE latents for ``EmbeddingVAE.decode``."""
        return z * self.std.view(-1, 1, 1) + self.mean.view(-1, 1, 1)
