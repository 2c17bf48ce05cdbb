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
from pjepa.heads.deterministic import covariance_loss, variance_loss
from pjepa.masking import build_mask_sampler
from pjepa.masking.ops import apply_masks
from pjepa.methods.base import Batch, HeadMonitor, Method, Metrics, Monitors, StepOutput
from pjepa.methods.registry import METHODS
from pjepa.models import PredictorTrunk, VisionTransformer
from pjepa.profiling import part


def build_encoder(cfg: Config) -> VisionTransformer:
    e = cfg.model.encoder
    return VisionTransformer(cfg.data.image_size, e.patch_size, e.embed_dim, e.depth, e.num_heads, e.mlp_ratio,
                             init_scheme=cfg.model.init_scheme)


def build_predictor(cfg: Config, encoder: VisionTransformer) -> PredictorTrunk:
    """The predictor trunk of ``cfg.model.predictor`` over ``encoder``'s patches and width."""
    p = cfg.model.predictor
    return PredictorTrunk(encoder.num_patches, encoder.embed_dim, p.embed_dim, p.depth, p.num_heads, p.mlp_ratio,
                          layout=p.layout, init_scheme=cfg.model.init_scheme)


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
    """I-JEPA with any registered predictor head.

    Options (``method.options``):
        target_norm: layer-normalise the teacher's embeddings before they are
            targets (the official recipe; False predicts raw embeddings).
        var_weight, cov_weight: VICReg variance / covariance terms on the context
            encoder's output tokens (C-JEPA, Mo & Tong 2024): they keep the student's
            tokens varied and decorrelated, against the partial collapse of small runs.
    """

    def __init__(self, cfg: Config, target_norm: bool = True, var_weight: float = 0.0, cov_weight: float = 0.0) -> None:
        super().__init__()
        p = cfg.model.predictor
        self.target_norm = target_norm
        self.var_weight, self.cov_weight = var_weight, cov_weight
        self.encoder = build_encoder(cfg)  # the context encoder (student)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = build_predictor(cfg, self.encoder)
        self.head = build_head(cfg.head.name, p.embed_dim, self.encoder.embed_dim, **cfg.head.options)
        self.mask_sampler = build_mask_sampler(cfg.mask.name, self.encoder.grid_size, cfg.mask.options)

    @torch.no_grad()
    def targets(self, images: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, K) -> (B, K, D) teacher embeddings (layer-normed unless target_norm=False)."""
        y = self.target_encoder(images)  # (B, N, D)
        if self.target_norm:
            y = F.layer_norm(y, (y.shape[-1],))
        return apply_masks(y, tgt_idx)

    def head_inputs(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-4: conditions h (B, M*Nt, Dp), targets y (B, M*Nt, D), context z (B, Nc, D) and the
        masks ctx_idx (B, Nc), tgt_idx (B, M, Nt) on the images' device."""
        with part("masks"):
            masks = self.mask_sampler(images.shape[0], generator)
            ctx_idx = masks.ctx_idx.to(images.device, non_blocking=True)  # (B, Nc)
            tgt_idx = masks.tgt_idx.to(images.device, non_blocking=True)  # (B, M, Nt)
        with part("target_encoder"):
            y = self.targets(images, tgt_idx.flatten(1))  # (B, M*Nt, D)
        with part("context_encoder"):
            z = self.encoder(images, ctx_idx)  # (B, Nc, D)
        with part("predictor"):
            h = self.predictor(z, ctx_idx, tgt_idx)  # (B, M*Nt, Dp)
        return h, y, z, ctx_idx, tgt_idx

    def training_step(self, batch: Batch) -> StepOutput:
        h, y, z, _, tgt_idx = self.head_inputs(batch.images, batch.mask_generator)
        with part("head"):
            loss, diag = self.head.loss(h, y, batch.noise_generator)
        metrics: Metrics = {f"head/{k}": v for k, v in diag.items()}
        if self.var_weight or self.cov_weight:
            flat = z.float().flatten(0, 1)  # (B*Nc, D)
            var, cov = variance_loss(flat), covariance_loss(flat)
            loss = loss + self.var_weight * var + self.cov_weight * cov
            metrics["reg/var"], metrics["reg/cov"] = var.detach(), cov.detach()
        metrics["mask/num_context"] = float(z.shape[1])
        metrics["mask/num_target"] = float(tgt_idx.shape[1] * tgt_idx.shape[2])
        # Collapse monitor: std of the teacher's (un-normalised-over-batch) features across the batch.
        pooled = y.float().mean(dim=1)  # (B, D)
        metrics["collapse/target_std"] = pooled.std(dim=0).mean().detach()
        if batch.diagnostics:
            metrics["collapse/target_erank"] = effective_rank(y.flatten(0, 1).detach())
            metrics["collapse/context_std"] = z.detach().float().mean(dim=1).std(dim=0).mean()
        return StepOutput(loss, metrics)

    def head_conditions(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (h (B, T, Dp), y (B, T, D)): the head's inputs and targets under fresh masks."""
        h, y, _, _, _ = self.head_inputs(images, generator)
        return h, y

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.target_encoder.parameters()), list(self.encoder.parameters())

    def compile_modules(self) -> list[nn.Module]:
        return [self.encoder, self.target_encoder, self.predictor]

    def monitors(self) -> Monitors:
        return Monitors(encoders={"target": self.target_encoder},
                        heads={"head": HeadMonitor(self.head, self.head_conditions)})

    def feature_encoder(self, which: str = "target") -> nn.Module:
        if which == "target":
            return self.target_encoder
        if which == "context":
            return self.encoder
        raise ConfigError(f"encoder {which!r}: choose target or context")
