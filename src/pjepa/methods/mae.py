"""MAE (He et al. 2022): reconstruct the pixels of randomly masked patches.

One step:
  1. sample masks (``mask.name=random``, 75 %): ctx_idx (B, Nkeep), tgt_idx (B, 1, Nmask);
  2. z = encoder(x[ctx_idx]): the same ViT as I-JEPA's context encoder, visible patches only;
  3. h = decoder(z, ctx_idx, tgt_idx): the predictor trunk with full attention over
     [visible tokens, mask tokens at the masked positions] (the ``per_block`` layout with one
     block holding every masked patch), then a linear pixel projection (B, Nmask, p*p*3);
  4. loss on the masked patches only: MSE to the per-patch normalised pixels (MAE's
     norm_pix_loss, the default), or to plain pixels, or L1 (the STL-10 comparison), plus the
     ``reg`` regulariser on the encoder's visible tokens if one is configured (MAE's own: none).
Pixels are those of the augmented, per-channel normalised batch. No EMA, no head: ``head``
config is not used. Evaluation uses the encoder (there is only one; "target" and "context"
both name it).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.config import Config
from pjepa.errors import ConfigError
from pjepa.masking import build_mask_sampler
from pjepa.masking.ops import apply_masks, patchify
from pjepa.methods.base import Batch, Method, Monitors, StepOutput
from pjepa.methods.ijepa import build_encoder, step_metrics
from pjepa.methods.registry import METHODS
from pjepa.models import PredictorTrunk, VisionTransformer
from pjepa.profiling import part
from pjepa.regularisers import build_regulariser, regularise

LOSSES = ("mse", "l1")


def pixel_targets(images: torch.Tensor, patch_size: int, tgt_idx: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """(B, 3, H, W), (B, T) -> (B, T, p*p*3) pixels of the masked patches; with ``norm_pix`` each patch
    standardised by its own mean and variance (MAE's eps 1e-6)."""
    target = apply_masks(patchify(images, patch_size), tgt_idx)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


@METHODS.register("mae")
class MAE(Method):
    """Masked autoencoder on the shared ViT encoder.

    Options (``method.options``):
        decoder_dim, decoder_depth, decoder_heads: the pixel decoder (MAE's 512 x 8, 16 heads;
            CPU presets size it down).
        loss: "mse" (MAE) or "l1" (the STL-10 comparison).
        norm_pix: regress per-patch normalised pixels (MAE's default) instead of the pixels.
    """

    label = "MAE"
    has_head = False

    def __init__(self, cfg: Config, decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 loss: str = "mse", norm_pix: bool = True) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"method.options.loss={loss!r}: choose {' or '.join(LOSSES)}")
        if decoder_dim <= 0 or decoder_depth <= 0 or decoder_heads <= 0 or decoder_dim % decoder_heads:
            raise ConfigError(f"method.options: decoder_dim={decoder_dim!r} must be > 0 and divisible by "
                              f"decoder_heads={decoder_heads!r}; decoder_depth={decoder_depth!r} must be > 0")
        self.loss_name, self.norm_pix = loss, norm_pix
        self.patch_size = cfg.model.encoder.patch_size
        self.encoder = build_encoder(cfg)
        self.decoder = PredictorTrunk(self.encoder.num_patches, self.encoder.embed_dim, decoder_dim, decoder_depth,
                                      decoder_heads, cfg.model.predictor.mlp_ratio, layout="per_block")
        self.pixel_proj = nn.Linear(decoder_dim, self.patch_size**2 * 3)
        nn.init.xavier_uniform_(self.pixel_proj.weight)
        nn.init.zeros_(self.pixel_proj.bias)
        self.mask_sampler = build_mask_sampler(cfg.mask.name, self.encoder.grid_size, cfg.mask.options)
        self.reg = build_regulariser(cfg.reg.name, cfg.reg.options)

    def training_step(self, batch: Batch) -> StepOutput:
        images = batch.images
        with part("masks"):
            masks = self.mask_sampler(images.shape[0], batch.mask_generator)
            ctx_idx = masks.ctx_idx.to(images.device, non_blocking=True)  # (B, Nkeep)
            tgt_idx = masks.tgt_idx.to(images.device, non_blocking=True)  # (B, M, Nt); random: M = 1
        with part("context_encoder"):
            z = self.encoder(images, ctx_idx)  # (B, Nkeep, D)
        with part("decoder"):
            pred = self.pixel_proj(self.decoder(z, ctx_idx, tgt_idx)).float()  # (B, M*Nt, p*p*3)
        with part("loss"):
            target = pixel_targets(images.float(), self.patch_size, tgt_idx.flatten(1), self.norm_pix)
            loss = F.mse_loss(pred, target) if self.loss_name == "mse" else F.l1_loss(pred, target)
        metrics = step_metrics(None, z, tgt_idx, batch.diagnostics)
        loss = loss + regularise(self.reg, z, batch.step, metrics)
        return StepOutput(loss, metrics)

    def compile_modules(self) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def monitors(self) -> Monitors:
        return Monitors(encoders={"encoder": self.encoder})

    def feature_encoder(self, which: str = "target") -> VisionTransformer:
        if which not in ("target", "context"):
            raise ConfigError(f"encoder {which!r}: choose target or context (MAE has one encoder: both name it)")
        return self.encoder
