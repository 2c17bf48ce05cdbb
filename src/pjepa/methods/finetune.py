"""Supervised fine-tuning of an encoder: the whole ViT plus a linear classifier, trained on labels.

The method behind ``pjepa eval finetune``; ``pjepa train method.name=finetune
method.options.num_classes=C model.init=FILE`` runs it under the main loop. Recipe of
MAE / BEiT fine-tuning: mean-pooled tokens -> linear classifier, cross-entropy with label
smoothing, stochastic depth (drop-path rising linearly to ``drop_path`` at the last
block), and layer-wise learning-rate decay through ``param_groups``: the classifier and final
norm learn at the full rate, block i at ``layer_decay ** (depth - i)``, the patch embedding
at ``layer_decay ** (depth + 1)``.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.config import Config
from pjepa.errors import ConfigError
from pjepa.methods.base import Batch, Method, Monitors, StepOutput
from pjepa.methods.registry import METHODS
from pjepa.models import VisionTransformer

_BLOCK = re.compile(r"^encoder\.blocks\.(\d+)\.")


@METHODS.register("finetune")
class FineTune(Method):
    """Options: num_classes (required), layer_decay (0.75), drop_path (0.1), label_smoothing (0.1)."""

    label = "fine-tune"
    has_head = False

    def __init__(self, cfg: Config, num_classes: int = 0, layer_decay: float = 0.75, drop_path: float = 0.1,
                 label_smoothing: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"method.options.num_classes={num_classes!r}: the fine-tune needs the number of classes")
        for name, v in (("layer_decay", layer_decay), ("drop_path", drop_path), ("label_smoothing", label_smoothing)):
            if not 0.0 <= v <= 1.0 or (name == "layer_decay" and v == 0.0):
                raise ConfigError(f"method.options.{name}={v!r}: need a number in {'(0' if name == 'layer_decay' else '[0'}, 1]")
        e = cfg.model.encoder
        self.encoder = VisionTransformer(cfg.data.image_size, e.patch_size, e.embed_dim, e.depth, e.num_heads,
                                         e.mlp_ratio, drop_path_rate=drop_path)
        self.classifier = nn.Linear(e.embed_dim, num_classes)
        nn.init.trunc_normal_(self.classifier.weight, std=2e-5)  # MAE: start from (almost) uniform predictions
        nn.init.zeros_(self.classifier.bias)
        self.layer_decay, self.label_smoothing = layer_decay, label_smoothing

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C)."""
        return self.classifier(self.encoder(images).mean(dim=1))

    def training_step(self, batch: Batch) -> StepOutput:
        # Drop-path draws from the global RNG: seed it from the batch's noise generator (inside a fork, so the
        # caller's RNG is untouched) and the step stays a pure function of (weights, batch).
        # The generator's seed (host metadata) rather than a draw from it: a draw on a GPU generator would have
        # to be read back, stalling the step. Mixed so the stream differs from the noise generator's own.
        seed = (batch.noise_generator.initial_seed() * 0x9E3779B97F4A7C15 + 1) % 2**63
        with torch.random.fork_rng(devices=[batch.images.device] if batch.images.device.type == "cuda" else []):
            torch.manual_seed(seed)
            logits = self.logits(batch.images).float()
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(dim=1) == batch.labels).float().mean().detach()
        return StepOutput(loss, {"finetune/train_top1": acc})

    def layer_of(self, name: str) -> int:
        """0 for the patch embedding, i + 1 for block i, depth + 1 for the final norm and the classifier."""
        depth = len(self.encoder.blocks)
        if name.startswith("encoder.patch_embed"):
            return 0
        m = _BLOCK.match(name)
        return int(m.group(1)) + 1 if m else depth + 1

    def param_groups(self) -> list[dict]:
        depth = len(self.encoder.blocks)
        groups: dict[tuple[int, bool], dict] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            layer, decay = self.layer_of(name), p.ndim >= 2
            group = groups.setdefault((layer, decay), {
                "params": [], "wd_scale": 1.0 if decay else 0.0,
                "lr_scale": self.layer_decay ** (depth + 1 - layer)})
            group["params"].append(p)
        return [groups[k] for k in sorted(groups)]

    def compile_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def monitors(self) -> Monitors:
        return Monitors(encoders={"encoder": self.encoder})

    def feature_encoder(self, which: str = "target") -> VisionTransformer:
        return self.encoder
