"""Image grids as PNG files, with PIL only (no matplotlib in the generative study).

A grid is rows of uint8 (n, 3, H, W) images, each row left-aligned, ``pad`` white pixels between and
around the cells: a grid of R rows and C columns of H x W images is (C (W + pad) + pad) pixels wide and
(R (H + pad) + pad) high.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from pjepa.runs import atomic_write_bytes

PAD = 2


def grid_size(rows: int, cols: int, h: int, w: int, pad: int = PAD) -> tuple[int, int]:
    """(width, height) in pixels of a grid of ``rows`` x ``cols`` cells of h x w images."""
    return cols * (w + pad) + pad, rows * (h + pad) + pad


def row_grid(rows: Sequence[torch.Tensor], cols: int, pad: int = PAD) -> Image.Image:
    """One grid row per uint8 (n, 3, H, W) tensor (at most ``cols`` images each, left-aligned)."""
    if not rows or any(r.dtype != torch.uint8 or r.ndim != 4 or r.shape[1] != 3 for r in rows):
        raise ValueError("row_grid needs a non-empty list of uint8 (n, 3, H, W) tensors")
    h, w = rows[0].shape[-2:]
    width, height = grid_size(len(rows), cols, h, w, pad)
    canvas = torch.full((3, height, width), 255, dtype=torch.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row[:cols]):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y : y + h, x : x + w] = image
    return Image.fromarray(canvas.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def image_grid(images: torch.Tensor, cols: int, pad: int = PAD) -> Image.Image:
    """uint8 (N, 3, H, W) images in rows of ``cols`` (the last row may be short)."""
    return row_grid(list(images.split(cols)), cols, pad)


def class_rows(images: torch.Tensor, labels: torch.Tensor, classes: int, cols: int) -> list[torch.Tensor]:
    """The first ``cols`` images of each of the first ``classes`` classes present in ``labels``, one row each."""
    present = torch.unique(labels).tolist()[:classes]
    return [images[(labels == c).nonzero().squeeze(1)[:cols]] for c in present]


def save_png(image: Image.Image, path: Path) -> Path:
    """Write ``image`` as PNG, atomically (the same pixels give the same bytes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
