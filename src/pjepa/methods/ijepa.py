"""I-JEPA (Assran et al. 2023): predict target-encoder embeddings of masked blocks.

One step:
  1. sample masks: ctx_idx (B*K, Nc), tgt_idx (B*K, M, Nt) (multi-block sampler; K mask sets
     per image, ``mask.options.sets_per_image``, default 1);
  2. y = layer_norm(target_encoder(x))[tgt_idx] under no_grad (EMA teacher), one pass per
     image shared by its K mask sets;
  3. z = context_encoder(x[ctx_idx]);
  4. h = predictor(z, ctx_idx, tgt_idx): one conditioning vector per target token;
  5. loss = head.loss(h, y) + reg(z): the head models p(y | h); the regulariser (``reg``
     config: none, vicreg, sigreg) keeps the student's features from collapsing.
The loop then updates target_encoder <- EMA(context_encoder). With ``target: online`` there
is no EMA teacher: the targets are the context encoder's own features of the full image.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.config import Config
from pjepa.errors import ConfigError
from pjepa.heads import build_head
from pjepa.masking import build_mask_sampler
from pjepa.masking.ops import apply_masks
from pjepa.methods.base import Batch, Capabilities, HeadMonitor, Method, Metrics, Monitors, StepOutput
from pjepa.methods.registry import METHODS
from pjepa.models import PredictorTrunk, VisionTransformer
from pjepa.profiling import part
from pjepa.regularisers import build_regulariser, regularise

#: Where the targets come from (``method.options.target``).
TARGETS = ("ema", "online", "online_stopgrad")


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


def step_metrics(y: torch.Tensor | None, z: torch.Tensor, tgt_idx: torch.Tensor, diagnostics: bool) -> Metrics:
    """The mask counts and collapse monitors every masked-prediction step logs: y (T_rows, M*Nt, D) targets
    (None for a method without target embeddings, MAE: no target monitors), z (T_rows, Nc, D) context
    tokens, tgt_idx (T_rows, M, Nt)."""
    metrics: Metrics = {"mask/num_context": float(z.shape[1]),
                        "mask/num_target": float(tgt_idx.shape[1] * tgt_idx.shape[2])}
    if y is not None:
        # Collapse monitor: std across the batch of each row's mean target (before any batch statistics).
        metrics["collapse/target_std"] = y.detach().float().mean(dim=1).std(dim=0).mean()
    # The same for the student: what an image-level regulariser acts on.
    metrics["collapse/context_std"] = z.detach().float().mean(dim=1).std(dim=0).mean()
    if diagnostics and y is not None:
        metrics["collapse/target_erank"] = effective_rank(y.flatten(0, 1).detach())
    return metrics


@METHODS.register("ijepa")
class IJEPA(Method):
    """I-JEPA with any registered predictor head and regulariser.

    Options (``method.options``):
        target_norm: layer-normalise the teacher's embeddings before they are
            targets (the official recipe; False predicts raw embeddings).
        target: where the targets come from. ``ema`` (I-JEPA): a teacher whose weights
            are an EMA of the context encoder, run under no_grad. ``online`` (as LeJEPA,
            Balestriero & LeCun 2025): the context encoder's own features of the full
            image, with gradients flowing through both branches; there is no teacher, so
            nothing but the regulariser stops a collapse (use ``reg.name: sigreg`` or
            ``vicreg``), and evaluation, export and every protocol rate the context encoder
            (``target`` names it too). ``online_stopgrad``: the same features under
            no_grad (SimSiam's stop-gradient; cheaper: no backward through the full-image pass).
    """

    label = "I-JEPA"
    has_target_encoder = True  # with the default ``target: ema``; ``capabilities`` reads the option

    @classmethod
    def capabilities(cls, cfg: Config) -> Capabilities:
        """A head always; a target encoder of its own only with the EMA teacher (``target: ema``)."""
        target = cfg.method.options.get("target", "ema")
        return Capabilities(has_head=cls.has_head, has_target_encoder=cls.has_target_encoder and target == "ema")

    def __init__(self, cfg: Config, target_norm: bool = True, target: str = "ema") -> None:
        super().__init__()
        if target not in TARGETS:
            raise ConfigError(f"method.options.target={target!r}: choose ema (EMA teacher), online (the context "
                              "encoder itself, gradients through both branches) or online_stopgrad")
        p = cfg.model.predictor
        self.target_norm, self.target = target_norm, target
        self.encoder = build_encoder(cfg)  # the context encoder (student)
        # The EMA teacher; None for an online target (the context encoder is the target encoder).
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False) if target == "ema" else None
        self.predictor = build_predictor(cfg, self.encoder)
        self.head = build_head(cfg.head.name, p.embed_dim, self.encoder.embed_dim, **cfg.head.options)
        self.mask_sampler = build_mask_sampler(cfg.mask.name, self.encoder.grid_size, cfg.mask.options)
        self.reg = build_regulariser(cfg.reg.name, cfg.reg.options)

    @property
    def sets_per_image(self) -> int:
        """K: mask sets per image (rows of a step's masks per image)."""
        return int(getattr(self.mask_sampler, "sets_per_image", 1))

    def targets(self, images: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B*K, T) -> (B*K, T, D) target embeddings (layer-normed unless target_norm=False).

        One target-encoder pass per image, shared by its K mask sets (rows image-major)."""
        if self.target == "online":
            y = self.encoder(images)  # (B, N, D), gradients flow (LeJEPA)
        else:
            with torch.no_grad():
                y = (self.target_encoder or self.encoder)(images)  # (B, N, D)
        if self.target_norm:
            y = F.layer_norm(y, (y.shape[-1],))
        if tgt_idx.shape[0] != y.shape[0]:
            y = y.repeat_interleave(tgt_idx.shape[0] // y.shape[0], dim=0)  # (B*K, N, D)
        return apply_masks(y, tgt_idx)

    def head_inputs(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-4: conditions h (B*K, M*Nt, Dp), targets y (B*K, M*Nt, D), context z (B*K, Nc, D) and
        the masks ctx_idx (B*K, Nc), tgt_idx (B*K, M, Nt) on the images' device (K = sets_per_image)."""
        with part("masks"):
            masks = self.mask_sampler(images.shape[0], generator)
            ctx_idx = masks.ctx_idx.to(images.device, non_blocking=True)  # (B*K, Nc)
            tgt_idx = masks.tgt_idx.to(images.device, non_blocking=True)  # (B*K, M, Nt)
        with part("target_encoder"):
            y = self.targets(images, tgt_idx.flatten(1))  # (B*K, M*Nt, D)
        with part("context_encoder"):
            k = ctx_idx.shape[0] // images.shape[0]
            z = self.encoder(images.repeat_interleave(k, dim=0) if k > 1 else images, ctx_idx)  # (B*K, Nc, D)
        with part("predictor"):
            h = self.predictor(z, ctx_idx, tgt_idx)  # (B*K, M*Nt, Dp)
        return h, y, z, ctx_idx, tgt_idx

    def training_step(self, batch: Batch) -> StepOutput:
        h, y, z, _, tgt_idx = self.head_inputs(batch.images, batch.mask_generator)
        with part("head"):
            loss, diag = self.head.loss(h, y, batch.noise_generator)
        metrics: Metrics = {f"head/{k}": v for k, v in diag.items()}
        loss = loss + regularise(self.reg, z, batch.step, metrics)
        metrics.update(step_metrics(y, z, tgt_idx, batch.diagnostics))
        return StepOutput(loss, metrics)

    def head_conditions(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (h (B, T, Dp), y (B, T, D)): the head's inputs and targets under fresh masks."""
        h, y, _, _, _ = self.head_inputs(images, generator)
        return h, y

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.target_encoder is None:
            return [], []
        return list(self.target_encoder.parameters()), list(self.encoder.parameters())

    def compile_modules(self) -> list[nn.Module]:
        return [m for m in (self.encoder, self.target_encoder, self.predictor) if m is not None]

    def monitors(self) -> Monitors:
        encoders = {"target": self.target_encoder} if self.target_encoder is not None else {"context": self.encoder}
        return Monitors(encoders=encoders, heads={"head": HeadMonitor(self.head, self.head_conditions)})

    def feature_encoder(self, which: str = "target") -> VisionTransformer:
        if which == "target":
            return self.target_encoder if self.target_encoder is not None else self.encoder
        if which == "context":
            return self.encoder
        raise ConfigError(f"encoder {which!r}: choose target or context")
