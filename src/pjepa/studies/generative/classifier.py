"""Two small supervised classifiers trained from scratch on the study's dataset, one per role.

The study (jepa-embeddings-generative-study, section 4.1) rates samples with a classifier trained
on the same dataset (its "ResNet score": Eq. 3 on a ResNet-18 fine-tuned on AFHQ, plus the class
histogram's TV distance, Eq. 4), and trains its pixel decoder with a perceptual loss (LDM's
recipe, section 3). Pretrained ImageNet networks cannot be downloaded here, so
both networks are trained here, each for one role:

- ``SmallResNet``, role ``"metric"``: the network the sample metrics read (penultimate features for
  Frechet distance / precision-recall, logits for the score and the class histogram).
- ``SmallVGG``, role ``"perceptual"``: the network whose intermediate feature maps give the
  decoder's perceptual loss.

They are different architectures trained separately, and the decoder must never be trained
against the metric's network: a decoder optimised through the network that later scores it would
inflate the score. ``save_classifier`` records the role in the weights file and its JSON,
``load_classifier(path, role=...)`` refuses a file of the other role, and ``perceptual_loss`` (in
``pjepa.studies.generative.decoder``) refuses a network whose role is ``"metric"``.

Both take images normalised with their own ``mean`` / ``std`` buffers (set by ``train_classifier``);
``prepare(uint8)`` resizes to ``image_size`` and normalises.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from tqdm import tqdm

from pjepa.data import carve_validation, resize_normalize
from pjepa.errors import CheckpointError, ConfigError
from pjepa.runs import atomic_write_bytes, resolve_device

FORMAT = "pjepa.classifier/1"
#: role -> the one architecture that may fill it.
ROLES = {"metric": "SmallResNet", "perceptual": "SmallVGG"}


class SmallClassifier(nn.Module):
    """What both networks share: normalisation buffers, the input size, the role and training record."""

    mean: torch.Tensor  # buffers: the normalisation statistics
    std: torch.Tensor

    def __init__(self, num_classes: int, image_size: int, width: int) -> None:
        super().__init__()
        if num_classes < 2 or image_size < 8 or width < 1:
            raise ConfigError(f"classifier num_classes={num_classes}, image_size={image_size}, width={width}: "
                              "need at least 2 classes, images of 8 px or more and a positive width")
        self.num_classes, self.image_size, self.width = num_classes, image_size, width
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("std", torch.ones(3))
        self.role: str | None = None  # set by save_classifier / load_classifier
        self.info: dict[str, Any] = {}  # set by train_classifier: accuracy on the held-out part, losses

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float (B, 3, S, S), S = ``image_size``, in this network's normalisation."""
        return resize_normalize(images.to(self.mean.device), self.image_size, self.mean, self.std)

    def options(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "image_size": self.image_size, "width": self.width}


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block (He et al. 2016), with a strided 1x1 shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class SmallResNet(SmallClassifier):
    """The metric network: a CIFAR-style ResNet (3 stages of ``blocks`` BasicBlocks, widths w, 2w, 4w).

    ``features(x)`` (B, 4w): the global-average-pooled penultimate layer; ``forward(x)`` (B, C) logits;
    ``features_and_logits(x)`` both at once. Input: (B, 3, H, W) in this network's normalisation.
    """

    def __init__(self, num_classes: int, image_size: int = 32, width: int = 32, blocks: int = 1) -> None:
        super().__init__(num_classes, image_size, width)
        self.blocks = blocks
        widths = [width, 2 * width, 4 * width]
        layers: list[nn.Module] = [_conv_bn(3, width), nn.ReLU(inplace=True)]
        cin = width
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        self.feature_dim = cin

    def options(self) -> dict[str, int]:
        return {**super().options(), "blocks": self.blocks}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))  # (B, 4w)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallVGG(SmallClassifier):
    """The perceptual network: VGG-style stages of two conv-BN-ReLU (widths w, 2w, 4w, ...), 2x2 max-pool
    between stages (Simonyan & Zisserman 2015, with BatchNorm to train fast from scratch).

    ``feature_maps(x)``: the last ReLU output of every stage (LPIPS's relu{i}_2), full resolution first;
    ``forward(x)`` (B, C) logits from the pooled last stage.
    """

    def __init__(self, num_classes: int, image_size: int = 32, width: int = 32, stages: int = 3) -> None:
        super().__init__(num_classes, image_size, width)
        if stages < 1 or image_size >> (stages - 1) < 2:
            raise ConfigError(f"SmallVGG stages={stages} at image_size={image_size}: choose 1..{int(math.log2(image_size))}")
        self.num_stages = stages
        cin, self.stages = 3, nn.ModuleList()
        for i in range(stages):
            w = width * 2**i
            self.stages.append(nn.Sequential(_conv_bn(cin, w), nn.ReLU(inplace=True), _conv_bn(w, w), nn.ReLU()))
            cin = w
        self.head = nn.Linear(cin, num_classes)

    def options(self) -> dict[str, int]:
        return {**super().options(), "stages": self.num_stages}

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [(B, w * 2^i, H / 2^i, W / 2^i) for each stage i]."""
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_maps(x)[-1].mean(dim=(2, 3)))


ARCHS: dict[str, type[SmallClassifier]] = {"SmallResNet": SmallResNet, "SmallVGG": SmallVGG}


def crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Light augmentation, batched: a random (H, W) crop of the reflect-padded image and a random
    horizontal flip, each drawn per image from ``generator`` (a CPU generator). (B, 3, H, W) -> same."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy, ox = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def classifier_accuracy(net: SmallClassifier, images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 256) -> float:
    """Top-1 accuracy of ``net`` (eval mode) on uint8 ``images``."""
    was_training = net.training
    net.eval()
    correct = 0
    for s in range(0, images.shape[0], batch_size):
        logits = net(net.prepare(images[s : s + batch_size]))
        correct += int((logits.argmax(1).cpu() == labels[s : s + batch_size]).sum())
    net.train(was_training)
    return correct / max(images.shape[0], 1)


def _check_labels(net: SmallClassifier, images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ConfigError(f"train_classifier needs uint8 images (N, 3, H, W) and labels (N,); got "
                          f"{images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= net.num_classes):
        raise ConfigError(f"labels span {int(labels.min())}..{int(labels.max())} but the classifier has "
                          f"num_classes={net.num_classes}: build it with the dataset's number of classes")


def _epoch(net: SmallClassifier, opt: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
           batch_size: int, lr_at, step: int, g: torch.Generator) -> tuple[float, int]:
    """One epoch over a seeded permutation; returns (mean loss, next step)."""
    dev = net.mean.device
    total, count = torch.zeros((), device=dev), 0
    for batch in torch.randperm(images.shape[0], generator=g).split(batch_size):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x = crop_flip(net.prepare(images[batch]), max(1, net.image_size // 8), g)
        loss = F.cross_entropy(net(x), labels[batch].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, count, step = total + loss.detach() * len(batch), count + len(batch), step + 1
    return float(total) / max(count, 1), step


def train_classifier(
    net: SmallClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    holdout: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> SmallClassifier:
    """Train ``net`` from scratch on uint8 ``images`` (N, 3, H, W) and ``labels`` (N,) with random crops
    (reflect padding of image_size / 8) and flips, AdamW and a cosine learning rate over all steps.

    ``holdout`` of every class is kept out of training (seeded) and rates the net: ``net.info`` gets
    ``heldout_accuracy``, the per-epoch mean ``loss`` and the sizes; ``mean`` / ``std`` (the dataset's
    channel statistics) become the net's normalisation. Returns ``net`` in eval mode.
    """
    _check_labels(net, images, labels)
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: all must be positive")
    g = torch.Generator().manual_seed(seed)
    train_idx, held_idx = (carve_validation(labels, holdout, g) if holdout > 0
                           else (torch.arange(len(labels)), torch.arange(0)))
    net.to(resolve_device(device))
    net.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    net.std.copy_(torch.as_tensor(std, dtype=torch.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * math.ceil(len(train_idx) / batch_size)

    def lr_at(step: int) -> float:  # cosine from lr to 0
        return lr * 0.5 * (1 + math.cos(math.pi * step / total))

    x, y, step, losses = images[train_idx], labels[train_idx], 0, []
    net.train()
    for _ in tqdm(range(epochs), desc=f"train {type(net).__name__}", disable=not progress):
        loss, step = _epoch(net, opt, x, y, batch_size, lr_at, step, g)
        losses.append(loss)
    net.eval()
    acc = classifier_accuracy(net, images[held_idx], labels[held_idx]) if len(held_idx) else float("nan")
    net.info = {"heldout_accuracy": acc, "loss": losses, "n_train": len(train_idx), "n_heldout": len(held_idx),
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed}
    return net


def _json_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_classifier(net: SmallClassifier, path: str | Path, role: str, **extra: Any) -> Path:
    """Write ``path`` (safetensors weights, the role in its metadata) and ``path.json`` (role, arch,
    options, normalisation, ``net.info`` and ``extra``, e.g. the dataset name). ``role`` must be the one
    ``ROLES`` gives the net's architecture: "metric" for SmallResNet, "perceptual" for SmallVGG."""
    arch = type(net).__name__
    if ROLES.get(role) != arch:
        raise ConfigError(f"role {role!r} for a {arch}: the metric network is a SmallResNet and the decoder's "
                          "perceptual network a separately trained SmallVGG (roles: "
                          f"{', '.join(f'{r}={a}' for r, a in ROLES.items())})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(path, save_safetensors_bytes(weights, metadata={"format": FORMAT, "role": role, "arch": arch}))
    meta = {"format": FORMAT, "role": role, "arch": arch, **net.options(), "mean": net.mean.tolist(),
            "std": net.std.tolist(), **net.info, **extra}
    atomic_write_bytes(_json_path(path), (json.dumps(meta, indent=2) + "\n").encode())
    net.role = role
    return path


def read_classifier_meta(path: str | Path) -> dict[str, Any]:
    """The JSON written beside a classifier's weights."""
    meta_path = _json_path(Path(path))
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} cannot be read ({e}); save the classifier again with "
                              "save_classifier") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("arch") not in ARCHS:
        raise CheckpointError(f"{meta_path} is not a {FORMAT} file; save the classifier again with save_classifier")
    return meta


def load_classifier(path: str | Path, role: str | None = None, device: str = "cpu") -> SmallClassifier:
    """The classifier saved at ``path``, in eval mode with frozen weights. With ``role`` ("metric" /
    "perceptual") a file of the other role is a ConfigError: the decoder's perceptual loss may never
    use the metric's network."""
    if role is not None and role not in ROLES:
        raise ConfigError(f"role {role!r}: choose {' or '.join(ROLES)}")
    path, meta = Path(path), read_classifier_meta(path)
    if role is not None and meta["role"] != role:
        raise ConfigError(f"{path} is the {meta['role']!r} network ({meta['arch']}) but a {role!r} network is "
                          f"needed: train a separate {ROLES[role]} with train_classifier and save it with "
                          f"save_classifier(..., role={role!r}); the decoder is never trained against the metric's network")
    try:
        with safe_open(str(path), framework="pt") as f:
            file_role = (f.metadata() or {}).get("role")
        weights = load_safetensors_bytes(path.read_bytes())
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); save the classifier again") from None
    if file_role != meta["role"]:
        raise CheckpointError(f"{path} holds a {file_role!r} network but its JSON says {meta['role']!r}: the "
                              "files were mixed up; save the classifier again with save_classifier")
    options = {k: meta[k] for k in ("num_classes", "image_size", "width", "blocks", "stages") if k in meta}
    net = ARCHS[meta["arch"]](**options)
    net.load_state_dict(weights)
    net.role = meta["role"]
    net.info = {k: v for k, v in meta.items() if k not in ("format", "role", "arch", "mean", "std", *options)}
    return net.to(resolve_device(device)).eval().requires_grad_(False)
