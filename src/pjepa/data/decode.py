"""Decode encoded images (JPEG, PNG, ...) into one uint8 tensor.

Datasets are decoded once and kept in memory as uint8 (N, 3, H, W): decoding is
the slow part of loading, indexing a tensor is free. Every image goes through
``.convert("RGB")`` so grayscale, palette, CMYK and RGBA files are accepted (alpha
is dropped, not composited). 16-bit greyscale (PNG, TIFF) keeps its high byte:
Pillow's own conversion clips it (any value >= 255 turns white). 32-bit integer
and float images have no agreed range and are refused.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pjepa.errors import DataError

#: Show a progress bar above this many images.
PROGRESS_MIN = 5000

Blob = bytes | bytearray | memoryview


#: Pillow modes of 16-bit greyscale (PNG, TIFF, PGM): unsigned, 0..65535.
_GREY16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: Modes without an agreed 0..255 mapping (32-bit integers, floats): refused rather than guessed.
_NO_RANGE = {"I": "32-bit integer", "F": "32-bit float"}


def _where(index: int, names: Sequence[str] | None, source: str) -> str:
    """'image 3 ('a.jpg') of SOURCE': which image an error is about."""
    name = f" ({names[index]!r})" if names is not None else ""
    return f"image {index}{name} of {source}"


def _rgb(img: Image.Image, index: int, names: Sequence[str] | None, source: str) -> Image.Image:
    """``img`` (loaded) as RGB, with 8-bit values that mean what the file meant."""
    mode = img.mode
    if mode in _GREY16 or (mode == "I" and img.format == "PNG"):  # Pillow < 10 opens 16-bit PNGs as "I"
        # convert("RGB") would clip 0..65535 to 0..255; the high byte is the 8-bit value (65535 -> 255).
        grey = (np.asarray(img) >> 8).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in _NO_RANGE:
        raise DataError(
            f"{_where(index, names, source)} is a {_NO_RANGE[mode]} image (Pillow mode {mode}), which has no "
            "standard 0..255 range; save it as an 8-bit (or 16-bit) RGB or greyscale JPEG/PNG"
        )
    return img.convert("RGB")


def _open_rgb(blob: Blob, index: int, names: Sequence[str] | None, source: str) -> Image.Image:
    """Decode one image to RGB; any decoder failure becomes a DataError naming it."""
    try:
        with Image.open(io.BytesIO(blob)) as img:
            img.load()
            return _rgb(img, index, names, source)
    except DataError:
        raise  # already names the image (DataError is a ValueError: keep it out of the clause below)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        # Pillow's own text for an unknown format names a BytesIO object, which tells the user nothing.
        reason = "no known image format (empty, random bytes or a broken header)" if isinstance(
            err, UnidentifiedImageError) else str(err)
        raise DataError(
            f"cannot decode {_where(index, names, source)}: {reason}; the file is corrupt "
            "or not an image — replace it or re-create the data file"
        ) from err


def _fit(img: Image.Image, size: tuple[int, int], resize: bool, index: int, source: str) -> Image.Image:
    """Return ``img`` at ``size`` (W, H), resizing only when allowed."""
    if img.size == size:
        return img
    if not resize:
        raise DataError(
            f"image {index} of {source} is {img.size[0]}x{img.size[1]} but image 0 is "
            f"{size[0]}x{size[1]}; set the option image_size=<pixels> to resize all images"
        )
    return img.resize(size, Image.BILINEAR)  # type: ignore[attr-defined]  # stubs: Image.Resampling (Pillow 9.1+)


def decode_images(
    blobs: Sequence[Blob],
    source: str,
    names: Sequence[str] | None = None,
    image_size: int | None = None,
) -> torch.Tensor:
    """Decode encoded images into uint8 (N, 3, H, W).

    Args:
        blobs: encoded files (bytes or memoryviews into a larger buffer).
        source: where they come from (a path, "split 'train' of x.npz"), for errors.
        names: optional per-image names (file names), for errors.
        image_size: resize every image to image_size x image_size (bilinear).
            Without it all images must have the size of the first one.
    """
    n = len(blobs)
    if n == 0:
        raise DataError(f"no images to decode in {source}")
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise DataError(f"option image_size must be a positive int, got {image_size!r}")
    first = _open_rgb(blobs[0], 0, names, source)
    size = (image_size, image_size) if image_size is not None else first.size  # (W, H)
    out = np.empty((n, 3, size[1], size[0]), dtype=np.uint8)  # (N, 3, H, W)
    bar = tqdm(total=n, desc=f"decode {source}"[:60], unit="img", disable=True if n <= PROGRESS_MIN else None)  # None: only on a terminal
    with bar:
        for i in range(n):
            img = first if i == 0 else _open_rgb(blobs[i], i, names, source)
            img = _fit(img, size, image_size is not None, i, source)
            out[i] = np.asarray(img).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            bar.update(1)
    return torch.from_numpy(out)


def resize_uint8(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize uint8 (N, 3, H, W) to (N, 3, image_size, image_size); no-op when None or equal.

    For raw-array datasets (CIFAR batches, STL-10) that accept ``image_size`` too.
    Bilinear, antialiased when shrinking, in chunks to bound the float memory.
    """
    if image_size is None or tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    if not isinstance(image_size, int) or image_size <= 0:
        raise DataError(f"option image_size must be a positive int, got {image_size!r}")
    shrink = image_size < max(images.shape[-2:])
    out = torch.empty((images.shape[0], 3, image_size, image_size), dtype=torch.uint8)
    for start in range(0, images.shape[0], 1024):
        chunk = images[start : start + 1024].float()
        chunk = F.interpolate(chunk, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=shrink)
        out[start : start + 1024] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out
