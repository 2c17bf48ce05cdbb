"""InceptionV3 laid out like the standard FID network, so its weights load without torchvision.

Szegedy et al., "Rethinking the Inception Architecture for Computer Vision" (CVPR 2016), in the variant that
TensorFlow's FID code used (the 2015-12-05 graph, 1008 classes). Module names and shapes follow
torchvision's ``Inception3`` (``aux_logits=False``, ``num_classes=1008``) with the four blocks that
pytorch-fid patches (``FIDInceptionA``, ``FIDInceptionC``, ``FIDInceptionE_1``, ``FIDInceptionE_2``), so the
file ``pt_inception-2015-12-05-6726825d.pth`` from pytorch-fid's releases loads here as it is. This machine
cannot download it: fetch it elsewhere and pass the local path to ``load_fid_inception``.

Differences from torchvision's network, all taken from pytorch-fid (they match the TF graph):
  * the 3x3 average pools inside the A, C and first E blocks ignore padded zeros
    (``count_include_pad=False``);
  * the last E block (``Mixed_7c``) pools its ``branch_pool`` input with a 3x3 max pool, not an average.
No auxiliary classifier and no dropout: this network is a frozen feature extractor.

Input handling as pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``: images in [0, 1]
are resized to 299 x 299 by ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing) and
mapped to [-1, 1] by ``2x - 1``. pytorch-fid's FIDs differ slightly from the original TF code, which resized
differently; numbers from this module are comparable with pytorch-fid's.

Outputs: the 2048-d average-pooled ``Mixed_7c`` features (what FID uses) and the 1008 logits of ``fc``.
``logits_unbiased`` (the pool features times ``fc.weight``, no bias) is what the original Inception Score
code and torch-fidelity score; ``logits`` adds the bias.

Parameters: 23,850,960 = torchvision's 27,161,264 (aux classifier, 1000 classes) - 3,326,696 (aux
classifier) + 16,392 (8 more classes x 2049); 94 conv + batch-norm layers.

References: github.com/mseitzer/pytorch-fid ``src/pytorch_fid/inception.py`` and torchvision
``torchvision/models/inception.py`` (both read for the layout, code written here).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.errors import ConfigError

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
NUM_CLASSES = 1008
POOL_DIM = 2048
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as TF) -> ReLU; state keys ``conv.*`` and ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average over the valid pixels only (TF's SAME average pool)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35 x 35 block (Mixed_5b/c/d): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1, concatenated."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 35, 35) -> (B, 224 + pool_features, 35, 35)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_same(x))], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 288, 35, 35) -> (B, 768, 17, 17)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class FIDInceptionC(nn.Module):
    """17 x 17 block (Mixed_6b..e) with factorised 1x7 / 7x1 convolutions of width ``channels_7x7``."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row: dict[str, Any] = dict(kernel_size=(1, 7), padding=(0, 3))
        col: dict[str, Any] = dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 768, 17, 17) -> (B, 768, 17, 17)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = conv(b7dbl)
        return torch.cat([self.branch1x1(x), b7, b7dbl, self.branch_pool(_avg_pool_same(x))], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 768, 17, 17) -> (B, 1280, 8, 8)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class FIDInceptionE(nn.Module):
    """8 x 8 block (Mixed_7b, Mixed_7c) with split 1x3 / 3x1 outputs; ``pool`` is "avg" for pytorch-fid's
    FIDInceptionE_1 (Mixed_7b) and "max" for FIDInceptionE_2 (Mixed_7c), as in the TF graph."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ConfigError(f"pool={pool!r}; choose 'avg' (Mixed_7b) or 'max' (Mixed_7c)")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 8, 8) -> (B, 2048, 8, 8)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], dim=1)
        if self.pool == "avg":
            pooled = _avg_pool_same(x)
        else:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, b3dbl, self.branch_pool(pooled)], dim=1)


class InceptionFeatures(NamedTuple):
    """pool (B, 2048): average-pooled Mixed_7c (FID features); logits (B, 1008): ``fc`` with bias;
    logits_unbiased (B, 1008): ``pool @ fc.weight.T`` (what Inception Score implementations score)."""

    pool: torch.Tensor
    logits: torch.Tensor
    logits_unbiased: torch.Tensor


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3: (B, 3, H, W) images in [0, 1] -> ``InceptionFeatures``. Random (He-initialised)
    weights until loaded (``load_fid_inception``); use in eval mode (batch norm with its running statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(POOL_DIM, NUM_CLASSES)
        for m in self.modules():  # He init keeps a random network's activations alive through 94 layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, 299, 299) in [-1, 1], bilinear without antialiasing (pytorch-fid)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"images have shape {tuple(images.shape)}; pass (B, 3, H, W) RGB in [0, 1]")
        x = images.float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def forward(self, images: torch.Tensor) -> InceptionFeatures:
        x = self.preprocess(images)  # (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # (B, 2048)
        logits_unbiased = pool @ self.fc.weight.T  # (B, 1008)
        return InceptionFeatures(pool, logits_unbiased + self.fc.bias, logits_unbiased)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch.save'd state dict read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as e:
            raise ConfigError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(
            f"{path}: refused by torch.load(weights_only=True) ({str(e).strip().splitlines()[-1]}); "
            "re-save only the state dict of tensors"
        ) from None
    except Exception as e:  # truncated or foreign files fail deep inside the unpickler (EOFError, KeyError, ...)
        raise ConfigError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """The FID InceptionV3 with the weights at ``path`` (.pth / .pt via ``torch.load(weights_only=True)``, or
    .safetensors), in eval mode with gradients off. Batch-norm ``num_batches_tracked`` counters may be absent
    (they do not affect eval outputs); every other key must match in name and shape, else a ConfigError
    lists a few missing / unexpected / misshapen keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such weights file; download {FID_WEIGHTS_NAME} from pytorch-fid's GitHub releases "
            "on a machine with internet access and pass its local path"
        )
    state = dict(_read_state(path))
    model = FIDInceptionV3()
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [k for k in expected if k not in state]  # in network order: the first missing layer first
    unexpected = [k for k in state if k not in expected]
    misshapen = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                       if k in state and state[k].shape != v.shape)
    if missing or unexpected or misshapen:
        parts = [f"{name} [{_few(keys)}]" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)) if keys]
        raise ConfigError(
            f"{path}: not the FID InceptionV3 layout ({FID_WEIGHTS_NAME}): " + "; ".join(parts)
        )
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
