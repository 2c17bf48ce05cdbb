"""A procedurally generated labelled dataset for fast, file-free experiments.

The class is a *shape* (disk, square, triangle, stripes, checker, ...); two styles draw it:

- ``glyphs`` (the Quickstart's): 4-7 small copies of the shape scattered over a plain
  background, each with its own colour, position, size and stripe phase. Only the class is
  shared across an image, so I-JEPA's masked prediction in latent space pays for the shape
  and nothing else; raw pixels are dominated by where the glyphs fell. The smoke preset's
  encoder learns it in about two minutes on 2 CPU cores (docs/getting-started.md).
- ``shapes`` (the default, kept for the runs made with it): one large shape whose position,
  size, colours, background colour and gradient are random per image. Raw-pixel nearest
  neighbours do poorly, and so does a small I-JEPA: the colours it must keep to predict the
  masked regions are shared across the image and dominate its pooled features.

Everything is vectorised with torch and seeded by a ``torch.Generator``, so a (seed, split,
style) always gives the same images.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable
from typing import Literal

import torch

from pjepa.data.base import ImageDataset
from pjepa.data.registry import DATASETS
from pjepa.errors import DataError

Tensor = torch.Tensor
ShapeFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _box(u: Tensor, v: Tensor, half: float = 0.9) -> Tensor:
    return (u.abs() < half) & (v.abs() < half)


def _wave(t: Tensor, freq: Tensor, phase: Tensor) -> Tensor:
    return torch.sin(math.pi * freq * t + phase) > 0


# Each shape maps local coordinates u, v ((n, 1, S) and (n, S, 1), the shape's
# centre at 0 and its radius at 1) plus per-image freq/phase ((n, 1, 1)) to a
# boolean mask (n, S, S).
SHAPES: dict[str, ShapeFn] = {
    "disk": lambda u, v, f, p: u**2 + v**2 < 1.0,
    "square": lambda u, v, f, p: _box(u, v, 0.8),
    "triangle": lambda u, v, f, p: (v < 0.7) & (u.abs() < (v + 0.9) * 0.625),
    "plus": lambda u, v, f, p: ((u.abs() < 0.28) & (v.abs() < 1)) | ((v.abs() < 0.28) & (u.abs() < 1)),
    "ring": lambda u, v, f, p: ((u**2 + v**2) > 0.3) & ((u**2 + v**2) < 1.0),
    "horizontal-stripes": lambda u, v, f, p: _box(u, v) & _wave(v, f, p),
    "vertical-stripes": lambda u, v, f, p: _box(u, v) & _wave(u, f, p),
    "checker": lambda u, v, f, p: _box(u, v) & (_wave(u, f, p) ^ _wave(v, f, p)),
    "diagonal-stripes": lambda u, v, f, p: _box(u, v) & _wave((u + v) * 0.7071, f, p),
    "x-cross": lambda u, v, f, p: _box(u, v, 1.0) & (((u - v).abs() < 0.4) | ((u + v).abs() < 0.4)),
    "frame": lambda u, v, f, p: _box(u, v, 0.9) & ~_box(u, v, 0.55),
    "diamond": lambda u, v, f, p: u.abs() + v.abs() < 1.0,
}
SPLITS = ("train", "val")


def split_seed(seed: int, split: str) -> int:
    """A stable per-split seed (crc32, not Python's salted ``hash``)."""
    return zlib.crc32(f"pjepa-synthetic:{seed}:{split}".encode())


def _colours(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Foreground and background RGB in [0, 1] (n, 3), each channel 0.3-0.7 apart."""
    fg = torch.rand(n, 3, generator=g)
    bg = (fg + 0.3 + 0.4 * torch.rand(n, 3, generator=g)) % 1.0
    return fg, bg


def _masks(labels: Tensor, size: int, g: torch.Generator, radius: tuple[float, float] = (0.2, 0.35)) -> Tensor:
    """Boolean shape masks (n, S, S) at random position, size, frequency and phase."""
    n = labels.shape[0]
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(n, generator=g)  # radius, fraction of the side
    cx = r + (1 - 2 * r) * torch.rand(n, generator=g)
    cy = r + (1 - 2 * r) * torch.rand(n, generator=g)
    freq = (2.0 + torch.rand(n, generator=g)).view(n, 1, 1)
    phase = (2 * math.pi * torch.rand(n, generator=g)).view(n, 1, 1)
    pos = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres (S,)
    u = (pos.view(1, 1, size) - cx.view(n, 1, 1)) / r.view(n, 1, 1)  # (n, 1, S)
    v = (pos.view(1, size, 1) - cy.view(n, 1, 1)) / r.view(n, 1, 1)  # (n, S, 1)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for k, fn in enumerate(SHAPES.values()):
        idx = (labels == k).nonzero().squeeze(1)
        if len(idx):
            masks[idx] = fn(u[idx], v[idx], freq[idx], phase[idx]).expand(len(idx), size, size)
    return masks


def generate(n: int, num_classes: int, image_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Images uint8 (n, 3, S, S) and balanced, shuffled labels int64 (n,)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    masks = _masks(labels, image_size, g).unsqueeze(1)  # (n, 1, S, S)
    fg, bg = _colours(n, g)
    pos = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size - 0.5
    slope = 0.25 * (torch.rand(n, 2, generator=g) - 0.5)  # background gradient
    ramp = slope[:, 0].view(n, 1, 1, 1) * pos.view(1, 1, 1, -1) + slope[:, 1].view(n, 1, 1, 1) * pos.view(1, 1, -1, 1)
    img = torch.where(masks, fg.view(n, 3, 1, 1), bg.view(n, 3, 1, 1) + ramp)  # (n, 3, S, S)
    img = img + 0.04 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels


def generate_glyphs(n: int, num_classes: int, image_size: int, seed: int, count: tuple[int, int] = (4, 7),
                    radius: tuple[float, float] = (0.12, 0.18)) -> tuple[Tensor, Tensor]:
    """Images uint8 (n, 3, S, S) and balanced, shuffled labels int64 (n,): 4-7 small glyphs of the class's
    shape scattered over a plain dark background, each glyph with its own random bright colour, position,
    size, frequency and phase.

    Only the class is shared across an image: a masked region's glyph colours and positions cannot be
    predicted from the rest, only what its glyphs look like. Masked prediction in latent space thus pays
    for the shape and nothing else, while raw pixels are dominated by where the glyphs fell.
    """
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    img = torch.full((n, 3, image_size, image_size), 0.2)
    k = torch.randint(count[0], count[1] + 1, (n,), generator=g)  # glyphs per image
    for j in range(count[1]):
        mask = _masks(labels, image_size, g, radius).unsqueeze(1) & (j < k).view(n, 1, 1, 1)  # (n, 1, S, S)
        fg = 0.55 + 0.45 * torch.rand(n, 3, generator=g)  # bright: always apart from the background
        img = torch.where(mask, fg.view(n, 3, 1, 1), img)
    img = img + 0.04 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels


GENERATORS: dict[str, Callable[[int, int, int, int], tuple[Tensor, Tensor]]] = {
    "shapes": generate, "glyphs": generate_glyphs}


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise DataError(f"synthetic option {name} must be an int {span}, got {value!r}")
    return value


@DATASETS.register("synthetic")
def load_synthetic(split: str, path: str | os.PathLike | None = None, *, num_classes: int = 10,
                   image_size: int = 32, num_train: int = 5000, num_val: int = 1000, seed: int = 0,
                   style: Literal["shapes", "glyphs"] = "shapes") -> ImageDataset:
    """Procedural images (splits train/val, no files). Options: num_classes (<= 12), image_size, num_train,
    num_val, seed, style ("shapes": one large shape on a coloured background; "glyphs": 4-7 small shapes
    of the class, each its own colour, on a plain background, what the Quickstart learns)."""
    if path is not None:
        raise DataError(f"dataset 'synthetic' is generated, it reads no files; drop path={path!r}")
    if split not in SPLITS:
        raise DataError(f"synthetic has splits {', '.join(SPLITS)}, got {split!r}")
    if style not in GENERATORS:
        raise DataError(f"synthetic option style={style!r}: choose one of {', '.join(GENERATORS)}")
    _check_int("num_classes", num_classes, 2, len(SHAPES))
    _check_int("image_size", image_size, 8)
    n = _check_int("num_train" if split == "train" else "num_val", num_train if split == "train" else num_val, 1)
    images, labels = GENERATORS[style](n, num_classes, image_size, split_seed(_check_int("seed", seed, 0), split))
    return ImageDataset(images, labels, list(SHAPES)[:num_classes], "synthetic", split)
