"""The public Python API: load a trained encoder and turn images into features.

    >>> from pjepa import load_encoder
    >>> encoder = load_encoder("runs/cifar10")            # a run directory, or an exported .safetensors file
    >>> feats = encoder.embed(images)                      # uint8 (B, 3, H, W) or (B, H, W, 3) -> (B, D)

``load_encoder`` returns an ``Encoder``: a ``torch.nn.Module`` holding the ViT and the
preprocessing it was trained with (resolution, channel mean and std), so features come out
exactly as ``pjepa eval`` computes them: images resized to the model's resolution
(bilinear, antialiased when shrinking), scaled to [0, 1], normalised by the training set's
channel statistics, encoded, and the last layer's patch tokens mean-pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pjepa.data import resize_normalize
from pjepa.errors import PJepaError, WeightsError
from pjepa.models import VisionTransformer

#: The statistics an encoder file without its own falls back to (ImageNet's, the usual ones).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for the encoder: resized to ``image_size`` and normalised per channel
    (``mean``, ``std`` in [0, 1] units, the training set's)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}


class Encoder(nn.Module):
    """A trained ViT encoder with its own preprocessing.

    ``forward(images)`` gives the last layer's tokens (B, N, D); ``embed(images)`` their mean
    (B, D), the features kNN and the linear probe rate. Images: a uint8 tensor or numpy array,
    (B, 3, H, W) or (B, H, W, 3), any size (resized here); or float images in [0, 1].
    """

    def __init__(self, vit: VisionTransformer, preprocessing: Preprocessing, source: str) -> None:
        super().__init__()
        self.vit = vit.eval()
        self.preprocessing = preprocessing
        self.source = source

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Images as described in the class docstring -> normalised float32 (B, 3, S, S) on the encoder's device."""
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
            raise PJepaError(f"images of shape {tuple(x.shape)}: expected (B, 3, H, W) or (B, H, W, 3)")
        if x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
        if x.is_floating_point():
            if float(x.min()) < 0 or float(x.max()) > 1:
                raise PJepaError("float images must lie in [0, 1]; pass uint8 images (0-255) or divide by 255")
            x = (x * 255).round().to(torch.uint8)
        elif x.dtype != torch.uint8:
            raise PJepaError(f"images of dtype {x.dtype}: pass uint8 (0-255) or float in [0, 1]")
        p = self.preprocessing
        device = next(self.vit.parameters()).device
        return resize_normalize(x.contiguous().to(device), p.image_size, p.mean, p.std)

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, N, D) last-layer tokens of the preprocessed images."""
        return self.vit(self.preprocess(images))

    @torch.no_grad()
    def embed(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """(B, D) float32 on the CPU: mean-pooled last-layer tokens, in batches of ``batch_size``."""
        x = torch.as_tensor(images)
        out = [self(x[i : i + batch_size]).float().mean(dim=1).cpu() for i in range(0, max(len(x), 1), batch_size)]
        return torch.cat(out)[: len(x)]


def embed(encoder: Encoder, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """``encoder.embed(images)``: (B, D) features of a batch of images with the encoder's own preprocessing."""
    return encoder.embed(images, batch_size)


def load_encoder(path: str | Path, encoder: str = "target", checkpoint: str = "last",
                 device: str | torch.device = "cpu") -> Encoder:
    """The encoder of a run directory (its ``encoder``: target or context, at ``checkpoint``: last or
    best) or of an encoder file written by ``pjepa export`` / ``pjepa import``, ready for ``embed``."""
    path = Path(path)
    if path.is_dir():
        enc = _from_run(path, encoder, checkpoint)
    elif path.is_file() or path.with_suffix(".safetensors").is_file():
        enc = _from_file(path if path.is_file() else path.with_suffix(".safetensors"))
    else:
        raise WeightsError(f"{path}: neither a run directory nor an encoder file (.safetensors + .json)")
    return enc.to(device)


def encoder_architecture(path: str | Path) -> dict[str, Any]:
    """The sizes of an encoder file written by ``pjepa export`` / ``pjepa import``, read from the JSON beside it
    without loading the weights: ``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
    ``mlp_ratio`` (and ``preprocessing`` where the file records it)."""
    from pjepa.models.timm_format import read_architecture

    return read_architecture(path)


def _from_run(path: Path, which: str, checkpoint: str) -> Encoder:
    from pjepa.methods.load import load_run_method
    from pjepa.runs import Run

    run = Run(path)
    method, _ = load_run_method(run, checkpoint)
    vit = method.feature_encoder(which)
    if not isinstance(vit, VisionTransformer):
        raise WeightsError(f"{path}: the {which} encoder is a {type(vit).__name__}, not a VisionTransformer")
    mean, std = run.stats()
    prep = Preprocessing(run.config.data.image_size, tuple(mean.tolist()), tuple(std.tolist()))  # type: ignore[arg-type]
    return Encoder(vit, prep, f"{path} ({which} encoder, {checkpoint})")


def _from_file(path: Path) -> Encoder:
    from pjepa.models.timm_format import load_encoder as load_vit
    from pjepa.models.timm_format import read_architecture

    arch = read_architecture(path)
    vit = load_vit(path)
    p = arch.get("preprocessing") or {}
    prep = Preprocessing(int(p.get("image_size", arch["img_size"])), tuple(p.get("mean", IMAGENET_MEAN)),
                         tuple(p.get("std", IMAGENET_STD)))  # type: ignore[arg-type]
    if not p:
        import warnings

        warnings.warn(f"{path}: its JSON records no preprocessing; normalising with ImageNet's channel statistics "
                      "(files written by `pjepa export` record the run's own)", stacklevel=3)
    return Encoder(vit, prep, str(path))
