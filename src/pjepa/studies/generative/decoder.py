"""The pixel decoder: embedding maps (or VAE latents) back to images, to look at and to score samples.

The study's VAE decodes latents into encoder embeddings, not pixels, so a separate light decoder
(3.3M parameters there) maps them to images, trained "using a combination of perceptual loss and
adversarial objective in a similar way as [LDM]" (jepa-embeddings-generative-study, section 3;
its section 5.3 / Fig. 10 follows reconstructions of a fixed batch during training, which
``train_decoder`` returns). Here:

    loss = |x_hat - x|_1 + perceptual_weight * perceptual(x_hat, x)

in the run's normalised image space. ``perceptual`` is LPIPS with unit weights (Zhang et al. 2018):
feature maps of a separately trained ``SmallVGG`` (role "perceptual", never the metric's
``SmallResNet``: see ``classifier``) unit-normalised over channels, squared distances summed over
channels, averaged over positions and then over depths. The document's adversarial term (LDM's PatchGAN
discriminator) is not part of this decoder: no preset turned it on, so it was removed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm import tqdm

from pjepa.data import resize_normalize
from pjepa.errors import ConfigError
from pjepa.runs import resolve_device
from pjepa.studies.generative.classifier import SmallClassifier, SmallVGG


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32, dividing ``channels``."""
    return math.gcd(channels, 32)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a skip (1x1 conv when the width changes), as in LDM's decoder."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  nn.GroupNorm(_groups(cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def upsample_factors(factor: int) -> list[int]:
    """H / K as the stages' upsampling factors: 2s, then whatever odd factor remains (14 -> [2, 7])."""
    out = []
    while factor % 2 == 0:
        out.append(2)
        factor //= 2
    return out + ([factor] if factor > 1 else [])


class PixelDecoder(nn.Module):
    """(B, in_channels, K, K) maps -> (B, 3, H, W) images in normalised image space (no output squashing).

    A 3x3 conv and ``num_res_blocks`` ResBlocks at K x K, then one stage per factor of
    ``upsample_factors(H / K)``: nearest upsampling (no checkerboard artefacts), a 3x3 conv and
    ResBlocks, the width halving from ``width * max_mult`` towards ``width``; GroupNorm, SiLU and a
    3x3 conv to RGB. ``in_channels``: D for encoder maps, d for VAE latents.
    """

    def __init__(self, in_channels: int, image_size: int, grid_size: int, width: int = 64,
                 num_res_blocks: int = 1, max_mult: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or grid_size < 1 or image_size % grid_size != 0 or width < 1:
            raise ConfigError(f"PixelDecoder(in_channels={in_channels}, image_size={image_size}, grid_size={grid_size}, "
                              f"width={width}): image_size must be a multiple of the K x K grid (K = image_size / "
                              "patch_size of the encoder) and the sizes positive")
        self.in_channels, self.image_size, self.grid_size = in_channels, image_size, grid_size
        factors = upsample_factors(image_size // grid_size)
        mults = [min(2 ** (len(factors) - i), max_mult) for i in range(len(factors) + 1)]
        ch = width * mults[0]
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.mid = nn.Sequential(*[ResBlock(ch, ch) for _ in range(num_res_blocks)])
        stages = []
        for f, m in zip(factors, mults[1:]):
            stages += [nn.Upsample(scale_factor=f, mode="nearest"), nn.Conv2d(ch, width * m, 3, padding=1),
                       *[ResBlock(width * m, width * m) for _ in range(num_res_blocks)]]
            ch = width * m
        self.up = nn.Sequential(*stages)
        self.conv_out = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, K, K) -> (B, 3, H, W)."""
        if z.ndim != 4 or z.shape[1] != self.in_channels or z.shape[-2:] != (self.grid_size, self.grid_size):
            raise ConfigError(f"PixelDecoder expects (B, {self.in_channels}, {self.grid_size}, {self.grid_size}) "
                              f"maps, got {tuple(z.shape)}")
        return self.conv_out(self.up(self.mid(self.conv_in(z))))


def check_perceptual(vgg: nn.Module) -> SmallVGG:
    """``vgg`` if it may serve the perceptual loss: a SmallVGG not saved as the metric network."""
    if not isinstance(vgg, SmallVGG) or getattr(vgg, "role", None) == "metric":
        raise ConfigError(f"the perceptual loss got a {type(vgg).__name__} (role {getattr(vgg, 'role', None)!r}): "
                          "it needs the separately trained SmallVGG (load_classifier(path, role='perceptual')); "
                          "the decoder is never trained against the metric's network")
    return vgg


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.norm(dim=1, keepdim=True) + 1e-10)


def perceptual_loss(vgg: SmallVGG, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-style distance (unit weights) between (B, 3, H, W) images ``x`` and the target ``y``, both in
    ``vgg``'s normalisation: mean over depths of sum_c (unit(f_x) - unit(f_y))^2, averaged over positions
    and the batch. 0 for identical images; gradients reach ``x`` only. ``vgg`` must be in eval mode."""
    check_perceptual(vgg)
    if vgg.training:
        raise ConfigError("perceptual_loss needs the SmallVGG in eval mode (vgg.eval()): BatchNorm must use its "
                          "running statistics, not the batch's")
    with torch.no_grad():
        fy = vgg.feature_maps(y)
    fx = vgg.feature_maps(x)
    return torch.stack([(_unit(a) - _unit(b)).pow(2).sum(1).mean() for a, b in zip(fx, fy)]).mean()


def to_network_space(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, net: SmallClassifier) -> torch.Tensor:
    """Images normalised with (mean, std) -> normalised with ``net``'s own statistics."""
    m, s = mean.to(x).view(1, 3, 1, 1), std.to(x).view(1, 3, 1, 1)
    return (x * s + m - net.mean.view(1, 3, 1, 1)) / net.std.view(1, 3, 1, 1)


def decoder_loss(recon: torch.Tensor, target: torch.Tensor, vgg: SmallVGG, mean: torch.Tensor, std: torch.Tensor,
                 perceptual_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(L1 + perceptual_weight * perceptual, {"l1", "perceptual"} detached) of images normalised with (mean, std)."""
    l1 = (recon - target).abs().mean()
    perc = (perceptual_loss(vgg, to_network_space(recon, mean, std, vgg), to_network_space(target, mean, std, vgg))
            if perceptual_weight > 0 else torch.zeros((), device=recon.device))
    return l1 + perceptual_weight * perc, {"l1": l1.detach(), "perceptual": perc.detach()}


@dataclass
class DecoderHistory:
    """What ``train_decoder`` returns: losses every ``log_every`` steps and the fixed batch's reconstructions.

    ``snapshots[i]`` uint8 (n, 3, H, W) is the reconstruction after ``snapshot_steps[i]`` steps of the
    images ``targets`` (uint8, at the decoder's size): the study's Fig. 10 plots these.
    """

    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)
    snapshot_steps: list[int] = field(default_factory=list)
    snapshots: list[torch.Tensor] = field(default_factory=list)
    targets: torch.Tensor | None = None


def to_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised with (mean, std) -> uint8 on CPU."""
    x = x.float().cpu() * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _check_pairs(decoder: PixelDecoder, maps: torch.Tensor, images: torch.Tensor) -> None:
    k = decoder.grid_size
    if maps.ndim != 4 or maps.shape[1:] != (decoder.in_channels, k, k) or images.shape[0] != maps.shape[0]:
        raise ConfigError(f"train_decoder pairs maps {tuple(maps.shape)} with images {tuple(images.shape)}: need "
                          f"(N, {decoder.in_channels}, {k}, {k}) maps and N uint8 images (TokenShards.load / .images)")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ConfigError(f"train_decoder needs uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def _snapshot_due(step: int, every: int | Sequence[int], last: int) -> bool:
    return step in every if not isinstance(every, int) else (every > 0 and step % every == 0) or step == last


@dataclass
class _Trainer:
    """The state of one decoder training: networks, optimisers, normalisation, options."""

    decoder: PixelDecoder
    vgg: SmallVGG
    opt: torch.optim.Optimizer
    mean: torch.Tensor
    std: torch.Tensor
    perceptual_weight: float

    def batch(self, maps: torch.Tensor, images: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.mean.device
        x = resize_normalize(images[idx].to(dev), self.decoder.image_size, self.mean, self.std)
        return maps[idx].to(dev, torch.float32), x

    def step(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, parts = decoder_loss(self.decoder(z), x, self.vgg, self.mean, self.std, self.perceptual_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), **parts}

    @torch.no_grad()
    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.decoder(z), self.mean.cpu(), self.std.cpu())


def train_decoder(
    decoder: PixelDecoder,
    maps: torch.Tensor,
    images: torch.Tensor,
    vgg: SmallVGG,
    mean: torch.Tensor,
    std: torch.Tensor,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-4,
    perceptual_weight: float = 1.0,
    snapshot_every: int | Sequence[int] = 250,
    snapshot_size: int = 8,
    log_every: int = 10,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> DecoderHistory:
    """Train ``decoder`` on pairs (``maps`` float (N, C, K, K), ``images`` uint8 (N, 3, H, W)), the images
    resized to the decoder's size and normalised with (``mean``, ``std``) (the run's statistics).

    Batches are drawn with replacement from a ``seed``-ed generator; Adam (betas 0.5, 0.9, as LDM's
    autoencoder). ``vgg``: the perceptual SmallVGG, frozen here. A fixed batch of ``snapshot_size`` pairs is reconstructed
    every ``snapshot_every`` steps (an int; also after the last step) or at the listed steps.
    """
    _check_pairs(decoder, maps, images)
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"steps={steps}, batch_size={batch_size}, lr={lr}: all must be positive")
    dev = resolve_device(device)
    vgg = check_perceptual(vgg).to(dev).eval().requires_grad_(False)
    decoder.to(dev).train()
    t = _Trainer(decoder, vgg, torch.optim.Adam(decoder.parameters(), lr=lr, betas=(0.5, 0.9)),
                 torch.as_tensor(mean, dtype=torch.float32, device=dev), torch.as_tensor(std, dtype=torch.float32, device=dev),
                 perceptual_weight)
    g = torch.Generator().manual_seed(seed)
    fixed_z, fixed_x = t.batch(maps, images, torch.randperm(maps.shape[0], generator=g)[:snapshot_size])
    hist = DecoderHistory(targets=to_uint8(fixed_x, t.mean.cpu(), t.std.cpu()))
    bar = tqdm(range(1, steps + 1), desc="decoder", disable=not progress)
    for step in bar:
        parts = t.step(*t.batch(maps, images, torch.randint(maps.shape[0], (batch_size,), generator=g)))
        if step % log_every == 0 or step == steps:
            hist.steps.append(step)
            for k, v in parts.items():
                hist.losses.setdefault(k, []).append(float(v))
            bar.set_postfix(loss=f"{hist.losses['loss'][-1]:.4f}")
        if _snapshot_due(step, snapshot_every, steps):
            hist.snapshot_steps.append(step)
            hist.snapshots.append(t.reconstruct(fixed_z))
    return hist
