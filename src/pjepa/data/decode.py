"""Decode encoded images (JPEG, PNG, ...) into one uint8 tensor.

Datasets are decoded once and kept as uint8 (N, 3, H, W), in memory or, with
``data.cache: disk``, in a file (``pjepa.data.diskcache``): decoding is the slow
part of loading, indexing decoded rows is cheap. Every image goes through
``.convert("RGB")`` so grayscale, palette, CMYK and RGBA files are accepted (alpha
is dropped, not composited). 16-bit greyscale (PNG, TIFF) keeps its high byte:
Pillow's own conversion clips it (any value >= 255 turns white). 32-bit integer
and float images have no agreed range and are refused.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

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


class EncodedImages:
    """Encoded images not decoded yet: ``len`` images, image ``i`` read by ``read(i)``.

    The one decoding path, whole or in pieces: ``decode_images`` decodes all of
    them into memory; the disk cache (``pjepa.data.diskcache``) decodes row ranges
    with ``decode_into`` from several threads (Pillow releases the GIL while it
    decodes and resizes) straight into its file, so a split larger than memory
    never exists decoded in RAM. Both give the same bytes.
    """

    def __init__(self, count: int, read: Callable[[int], Blob], source: str,
                 names: Sequence[str] | None = None, image_size: int | None = None) -> None:
        if count == 0:
            raise DataError(f"no images to decode in {source}")
        if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
            raise DataError(f"option image_size must be a positive int, got {image_size!r}")
        self.count, self.read, self.source, self.names, self.image_size = count, read, source, names, image_size
        self._first: Image.Image | None = None
        self._size: tuple[int, int] | None = None  # (W, H) every image is brought to

    def __len__(self) -> int:
        return self.count

    def _image(self, i: int) -> Image.Image:
        return _open_rgb(self.read(i), i, self.names, self.source)

    def frame(self) -> tuple[int, int]:
        """(H, W) of every decoded image: ``image_size`` square, else the size of image 0 (decoded once)."""
        if self._size is None:
            if self.image_size is not None:
                self._size = (self.image_size, self.image_size)
            else:
                self._first = self._image(0)
                self._size = self._first.size
        return self._size[1], self._size[0]

    def decode_into(self, out: np.ndarray, start: int, bar: tqdm | None = None) -> None:
        """Decode images ``start .. start + len(out)`` into uint8 ``out`` (n, 3, H, W)."""
        h, w = self.frame()
        size, resize = (w, h), self.image_size is not None
        for k in range(out.shape[0]):
            i = start + k
            img = self._first if i == 0 and self._first is not None else self._image(i)
            img = _fit(img, size, resize, i, self.source)
            out[k] = np.asarray(img).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            if bar is not None:
                bar.update(1)


#: Set while a disk cache is being built: loaders hand back their ``EncodedImages`` undecoded.
_DEFER: ContextVar[bool] = ContextVar("pjepa_defer_decoding", default=False)


@contextmanager
def deferred_decoding() -> Iterator[None]:
    """Within this block ``decoded`` returns its ``EncodedImages`` as they are (the disk cache decodes them
    itself, in pieces, into its file); outside it decodes them into one tensor."""
    token = _DEFER.set(True)
    try:
        yield
    finally:
        _DEFER.reset(token)


def decoding_deferred() -> bool:
    """True inside ``deferred_decoding()``: a loader may then read its files lazily, image by image."""
    return _DEFER.get()


def decoded(images: EncodedImages) -> torch.Tensor | EncodedImages:
    """``images`` decoded into uint8 (N, 3, H, W), or the ``EncodedImages`` themselves inside
    ``deferred_decoding()``."""
    if _DEFER.get():
        return images
    h, w = images.frame()
    out = np.empty((len(images), 3, h, w), dtype=np.uint8)
    n = len(images)
    desc = f"decode {images.source}"[:60]
    with tqdm(total=n, desc=desc, unit="img", disable=True if n <= PROGRESS_MIN else None) as bar:  # None: a terminal
        images.decode_into(out, 0, bar)
    return torch.from_numpy(out)


def decode_images(
    blobs: Sequence[Blob],
    source: str,
    names: Sequence[str] | None = None,
    image_size: int | None = None,
) -> torch.Tensor | EncodedImages:
    """Decode encoded images into uint8 (N, 3, H, W) (undecoded ``EncodedImages`` inside ``deferred_decoding``).

    Args:
        blobs: encoded files (bytes or memoryviews into a larger buffer).
        source: where they come from (a path, "split 'train' of x.npz"), for errors.
        names: optional per-image names (file names), for errors.
        image_size: resize every image to image_size x image_size (bilinear).
            Without it all images must have the size of the first one.
    """
    return decoded(EncodedImages(len(blobs), blobs.__getitem__, source, names, image_size))


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
