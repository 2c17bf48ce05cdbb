"""Batched image transforms on uint8 tensors, on whatever device they live.

Augmentation runs on the whole batch at once (one ``affine_grid`` +
``grid_sample``), so images can stay as a uint8 tensor on the GPU and no
per-sample Python loop or DataLoader worker is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pjepa.data.diskimages import DiskImages
from pjepa.errors import DataError

Stats = torch.Tensor | Sequence[float]


def _check_images(images: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{what} expects uint8 images (B, 3, H, W), got {got}")


def _as_stat(values: Stats, device: torch.device) -> torch.Tensor:
    """Mean or std as float32 (1, 3, 1, 1) on ``device``."""
    return torch.as_tensor(values, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)


def channel_stats(
    images: torch.Tensor | DiskImages, num_samples: int = 2000, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (each float32 (3,), in [0, 1] units) of a random subsample.

    Uses ``num_samples`` images drawn without replacement (all when N is
    smaller): enough for normalisation constants, cheap for 100k images.
    ``images`` may be the disk cache's ``DiskImages``: only the sample is read.
    """
    if not isinstance(images, DiskImages):
        _check_images(images, "channel_stats")
    n = images.shape[0]
    if n > num_samples:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(n, generator=generator, device=gen_device)[:num_samples]
        images = images[idx.to(images.device)]
    total = torch.zeros(3, dtype=torch.float64, device=images.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, images.shape[0], 256):  # chunks bound the float64 memory
        x = images[start : start + 256].to(torch.float64).div_(255.0)  # (b, 3, H, W)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_(min=0).sqrt()
    return mean.float(), std.float()


def _crop_boxes(
    b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator | None, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample crop centre and half-size in normalised [-1, 1] coordinates, each (B,)."""
    u = torch.rand(b, 4, generator=generator, device=device)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * (h * w)  # pixels
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])  # width / height
    cw = torch.sqrt(area * aspect).clamp(max=w)  # crop size in pixels
    ch = torch.sqrt(area / aspect).clamp(max=h)
    x0 = u[:, 2] * (w - cw)
    y0 = u[:, 3] * (h - ch)
    cx = (x0 + cw / 2) / w * 2 - 1
    cy = (y0 + ch / 2) / h * 2 - 1
    return cx, cy, cw / w, ch / h


def random_resized_crop_flip(
    images: torch.Tensor,
    size: int,
    mean: Stats,
    std: Stats,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop + horizontal flip + normalisation of a whole batch.

    Args:
        images: uint8 (B, 3, H, W) on any device.
        size: output side in pixels.
        mean, std: per-channel statistics in [0, 1] units, (3,).
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        flip_p: probability of a horizontal flip per sample.
        generator: source of all randomness; must live on ``images.device``.

    Returns:
        float32 (B, 3, size, size), normalised. Bilinear sampling, no antialias:
        crops are mostly upsampled, so aliasing is negligible.
    """
    _check_images(images, "random_resized_crop_flip")
    device = images.device
    if generator is not None and generator.device.type != device.type:
        raise DataError(f"generator is on {generator.device} but images are on {device}; create it on {device}")
    b, _, h, w = images.shape
    cx, cy, sx, sy = _crop_boxes(b, h, w, scale, ratio, generator, device)
    flip = torch.rand(b, generator=generator, device=device) < flip_p
    sign = 1.0 - 2.0 * flip.float()  # -1 mirrors x inside the crop
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = sx * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)  # (B, size, size, 2)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x / 255.0 - _as_stat(mean, device)) / _as_stat(std, device)


def resize_normalize(images: torch.Tensor, size: int, mean: Stats, std: Stats) -> torch.Tensor:
    """Resize to (size, size) (bilinear, antialiased when shrinking) and normalise.

    The evaluation-time counterpart of ``random_resized_crop_flip``: uint8
    (B, 3, H, W) -> float32 (B, 3, size, size). No resize when already at size.
    """
    _check_images(images, "resize_normalize")
    x = images.float()  # (B, 3, H, W)
    h, w = images.shape[-2:]
    if (h, w) != (size, size):
        shrink = size < h or size < w
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return (x / 255.0 - _as_stat(mean, x.device)) / _as_stat(std, x.device)
