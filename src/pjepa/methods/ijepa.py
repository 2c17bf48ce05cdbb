"""I-JEPA (Assran et al. 2023): predict target-encoder embeddings of masked blocks.

One step:
  1. sample masks: ctx_idx (B, Nc), tgt_idx (B, M, Nt) (multi-block sampler);
  2. y = layer_norm(target_encoder(x))[tgt_idx] under no_grad (EMA teacher);
  3. z = context_encoder(x[ctx_idx]);
  4. h = predictor(z, ctx_idx, tgt_idx): one conditioning vector per target token;
  5. loss = head.loss(h, y): the head models p(y | h).
The loop then updates target_encoder <- EMA(context_encoder).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.config import Config
from pjepa.errors import ConfigError
from pjepa.heads import build_head
from pjepa.masking import MultiBlockMaskSampler
from pjepa.masking.ops import apply_masks
from pjepa.methods.base import Method, Metrics
from pjepa.methods.registry import METHODS
from pjepa.models import PredictorTrunk, VisionTransformer


def build_encoder(cfg: Config) -> VisionTransformer:
    m = cfg.model
    return VisionTransformer(cfg.data.image_size, m.patch_size, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio)


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """(T, D) -> exp(entropy of the normalised singular values) (Roy & Vetterli 2007).

    D for isotropic features, 1 for a collapse onto a line; NaN if ``x`` is not
    finite (the SVD would raise, hiding the loop's own non-finite-loss report).
    """
    finite = torch.isfinite(x).all()
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    s = torch.linalg.svdvals(x - x.mean(dim=0))
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return torch.where(finite, erank, torch.full_like(erank, float("nan")))


@METHODS.register("ijepa")
class IJEPA(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m, mk = cfg.model, cfg.mask
        self.encoder = build_encoder(cfg)  # the context encoder (student)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = PredictorTrunk(
            self.encoder.num_patches, m.embed_dim, m.pred_dim, m.pred_depth, m.pred_num_heads, m.mlp_ratio,
            layout=m.pred_layout,
        )
        self.head = build_head(cfg.head.name, m.pred_dim, m.embed_dim, **cfg.head.options)
        self.mask_sampler = MultiBlockMaskSampler(
            self.encoder.grid_size, num_targets=mk.num_targets, target_scale=mk.target_scale,
            target_aspect=mk.target_aspect, context_scale=mk.context_scale, context_aspect=mk.context_aspect,
            min_context=mk.min_context, num_candidates=mk.num_candidates,
        )

    @torch.no_grad()
    def targets(self, images: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, K) -> (B, K, D) layer-normed teacher embeddings."""
        y = self.target_encoder(images)  # (B, N, D)
        y = F.layer_norm(y, (y.shape[-1],))
        return apply_masks(y, tgt_idx)

    def head_inputs(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-4: masks, targets y (B, M*Nt, D), context z (B, Nc, D), conditions h (B, M*Nt, Dp)."""
        masks = self.mask_sampler(images.shape[0], generator)
        ctx_idx = masks.ctx_idx.to(images.device, non_blocking=True)  # (B, Nc)
        tgt_idx = masks.tgt_idx.to(images.device, non_blocking=True)  # (B, M, Nt)
        y = self.targets(images, tgt_idx.flatten(1))  # (B, M*Nt, D)
        z = self.encoder(images, ctx_idx)  # (B, Nc, D)
        h = self.predictor(z, ctx_idx, tgt_idx)  # (B, M*Nt, Dp)
        return h, y, z, tgt_idx

    def forward(
        self, images: torch.Tensor, generator: torch.Generator, diagnostics: bool = False
    ) -> tuple[torch.Tensor, Metrics]:
        h, y, z, tgt_idx = self.head_inputs(images, generator)
        loss, diag = self.head.loss(h, y)
        metrics: Metrics = {f"head/{k}": v for k, v in diag.items()}
        metrics["mask/num_context"] = float(z.shape[1])
        metrics["mask/num_target"] = float(tgt_idx.shape[1] * tgt_idx.shape[2])
        # Collapse monitor: std of the teacher's (un-normalised-over-batch) features across the batch.
        pooled = y.float().mean(dim=1)  # (B, D)
        metrics["collapse/target_std"] = pooled.std(dim=0).mean().detach()
        if diagnostics:
            metrics["collapse/target_erank"] = effective_rank(y.flatten(0, 1).detach())
            metrics["collapse/context_std"] = z.detach().float().mean(dim=1).std(dim=0).mean()
        return loss, metrics

    def head_conditions(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        h, y, _, _ = self.head_inputs(images, generator)
        return h, y

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.target_encoder.parameters()), list(self.encoder.parameters())

    def feature_encoder(self, which: str = "target") -> nn.Module:
        if which == "target":
            return self.target_encoder
        if which == "context":
            return self.encoder
        raise ConfigError(f"encoder {which!r}: choose target or context")
