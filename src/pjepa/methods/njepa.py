"""N-JEPA (noise-based JEPA): I-JEPA plus a second predictor whose mask tokens sit at noisy positions.

The source document's equations were lost in extraction; these forms are the project's
reading of its text (EDM noise on the position embeddings of the mask tokens only):

    n ~ N(0, 1),  sigma = exp(P_mean + P_std * n)              (EDM's log-normal sigma)
    pos~ = c_in(sigma) * (pos + sigma * eps),  eps ~ N(0, I),  c_in = 1 / sqrt(sigma^2 + sigma_data^2)

with P_mean -1.2, P_std 1.2, sigma_data 0.5. ``noise="multi"`` draws one sigma per target
block (the document's multi-level schedule, its default), ``"single"`` one per image for
all blocks. Two predictors read the same context tokens: the clean one (I-JEPA's) and the
noisy one, with their own parameters, mask token and head unless shared. The loss is

    L = w_CT * C-T + w_NT * N-T + w_NC * N-C   (weights 1 / 0.1 / 0.1, the document's best)

C-T is the head's own loss on the clean predictor (smooth L1 for the deterministic head),
N-T the same loss on the noisy predictor, N-C the MSE between the noisy and the clean point
predictions, the clean side detached. Heads whose point estimate is not differentiable
(every probabilistic head: their ``predict`` samples or integrates under no_grad) put N-C on
the predictors' outputs ``h`` instead; ``head/nc_space`` in the metrics says which.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.config import Config
from pjepa.errors import ConfigError
from pjepa.heads import PredictorHead, build_head
from pjepa.methods.base import Batch, HeadMonitor, Metrics, Monitors, StepOutput
from pjepa.methods.ijepa import IJEPA, build_predictor, step_metrics
from pjepa.methods.registry import METHODS
from pjepa.models import PredictorTrunk
from pjepa.profiling import part
from pjepa.regularisers import regularise


def edm_sigma(shape: tuple[int, ...], p_mean: float, p_std: float, generator: torch.Generator,
              device: torch.device) -> torch.Tensor:
    """sigma = exp(P_mean + P_std * n), n ~ N(0, 1), drawn from ``generator`` (EDM's training noise levels)."""
    n = torch.randn(shape, generator=generator, device=device)
    return torch.exp(p_mean + p_std * n)


def noisy_positions(pos: torch.Tensor, sigma: torch.Tensor, sigma_data: float,
                    generator: torch.Generator) -> torch.Tensor:
    """(B, M, Nt, Dp) clean positions, sigma broadcastable to them -> c_in(sigma) * (pos + sigma * eps)."""
    eps = torch.randn(pos.shape, generator=generator, device=pos.device, dtype=pos.dtype)
    c_in = (sigma**2 + sigma_data**2).rsqrt()
    return c_in * (pos + sigma * eps)


@METHODS.register("njepa")
class NJEPA(IJEPA):
    """N-JEPA with any registered predictor head.

    Options (``method.options``):
        target_norm, target: as I-JEPA's.
        p_mean, p_std: the log-normal noise levels; sigma_data: EDM's data scale in c_in.
        noise: "multi" (one sigma per target block) or "single" (one per image).
        share_predictor: one predictor trunk (and head) for both branches.
        share_mask_token: one mask token for both branches (with unshared trunks).
        weight_ct, weight_nt, weight_nc: the loss weights (N-T and N-C at 0 = I-JEPA).
    """

    label = "N-JEPA"

    def __init__(
        self,
        cfg: Config,
        target_norm: bool = True,
        target: str = "ema",
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_data: float = 0.5,
        noise: str = "multi",
        share_predictor: bool = False,
        share_mask_token: bool = False,
        weight_ct: float = 1.0,
        weight_nt: float = 0.1,
        weight_nc: float = 0.1,
    ) -> None:
        super().__init__(cfg, target_norm, target)
        if noise not in ("multi", "single"):
            raise ConfigError(f"method.options.noise={noise!r}: choose multi (one level per block) or single")
        if not (p_std >= 0 and sigma_data > 0):
            raise ConfigError(f"method.options: need p_std >= 0 and sigma_data > 0, got {p_std!r}, {sigma_data!r}")
        for name, w in (("weight_ct", weight_ct), ("weight_nt", weight_nt), ("weight_nc", weight_nc)):
            if not w >= 0:
                raise ConfigError(f"method.options.{name}={w!r}: need a weight >= 0")
        self.p_mean, self.p_std, self.sigma_data, self.noise = p_mean, p_std, sigma_data, noise
        self.weights = (weight_ct, weight_nt, weight_nc)
        self.share_predictor, self.share_mask_token = share_predictor, share_mask_token
        p = cfg.model.predictor
        # None when shared: one module registered under two names would be saved twice.
        self.noisy_predictor: PredictorTrunk | None = None
        self.noisy_head: PredictorHead | None = None
        self.noisy_mask_token: nn.Parameter | None = None
        if not share_predictor:
            self.noisy_predictor = build_predictor(cfg, self.encoder)
            self.noisy_head = build_head(cfg.head.name, p.embed_dim, self.encoder.embed_dim, **cfg.head.options)
            if share_mask_token:
                self.noisy_predictor.mask_token = None  # the clean trunk's token is passed in
        elif not share_mask_token:
            self.noisy_mask_token = nn.Parameter(torch.zeros(1, 1, p.embed_dim))
            nn.init.trunc_normal_(self.noisy_mask_token, std=0.02)

    def noisy_branch(self) -> tuple[PredictorTrunk, PredictorHead, torch.Tensor | None]:
        """(trunk, head, mask token override) of the noisy predictor."""
        trunk = self.noisy_predictor or self.predictor
        head = self.noisy_head or self.head
        token = self.predictor.mask_token if self.share_mask_token else self.noisy_mask_token
        return trunk, head, token

    def noisy_conditions(self, z: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Nc, D) context, (B, Nc), (B, M, Nt) -> (h~ (B, M*Nt, Dp), sigma (B, M or 1)) of the noisy predictor."""
        trunk, _, token = self.noisy_branch()
        B, M, Nt = tgt_idx.shape
        levels = M if self.noise == "multi" else 1
        sigma = edm_sigma((B, levels, 1, 1), self.p_mean, self.p_std, generator, z.device)
        pos = trunk.target_positions(tgt_idx).view(B, M, Nt, -1)  # (B, M, Nt, Dp)
        pos = noisy_positions(pos, sigma, self.sigma_data, generator).view(B, M * Nt, -1)
        return trunk(z, ctx_idx, tgt_idx, tgt_pos=pos, mask_token=token), sigma.view(B, levels)

    def training_step(self, batch: Batch) -> StepOutput:
        w_ct, w_nt, w_nc = self.weights
        h, y, z, ctx_idx, tgt_idx = self.head_inputs(batch.images, batch.mask_generator)
        with part("head"):
            loss_ct, diag = self.head.loss(h, y, batch.noise_generator)
        metrics: Metrics = {f"head/{k}": v for k, v in diag.items()}
        loss = w_ct * loss_ct
        metrics["loss/ct"] = loss_ct.detach()
        if w_nt > 0 or w_nc > 0:
            with part("noisy_predictor"):
                h_noisy, sigma = self.noisy_conditions(z, ctx_idx, tgt_idx, batch.noise_generator)
            _, noisy_head, _ = self.noisy_branch()
            with part("noisy_head"):
                loss_nt, _ = noisy_head.loss(h_noisy, y, batch.noise_generator)
                loss_nc = self.denoise_loss(h, h_noisy, noisy_head)
            loss = loss + w_nt * loss_nt + w_nc * loss_nc
            metrics.update({"loss/nt": loss_nt.detach(), "loss/nc": loss_nc.detach(),
                            "noise/sigma_mean": sigma.mean().detach()})
        loss = loss + regularise(self.reg, z, batch.step, metrics)
        metrics.update(step_metrics(y, z, tgt_idx, batch.diagnostics))
        return StepOutput(loss, metrics)

    def denoise_loss(self, h: torch.Tensor, h_noisy: torch.Tensor, noisy_head: PredictorHead) -> torch.Tensor:
        """N-C: MSE(noisy, clean.detach()) on point predictions when both heads' are differentiable, else on h."""
        if self.head.differentiable_predict and noisy_head.differentiable_predict:
            return F.mse_loss(noisy_head.predict(h_noisy).float(), self.head.predict(h).detach().float())
        return F.mse_loss(h_noisy.float(), h.detach().float())

    def compile_modules(self) -> list[nn.Module]:
        return super().compile_modules() + ([self.noisy_predictor] if self.noisy_predictor is not None else [])

    def monitors(self) -> Monitors:
        monitors = super().monitors()
        if self.noisy_head is not None:
            monitors.heads["noisy_head"] = HeadMonitor(self.noisy_head, self.noisy_head_conditions)
        return monitors

    def noisy_head_conditions(self, images: torch.Tensor, generator: torch.Generator):
        """(B, 3, H, W) -> (h~, y): the noisy predictor's conditions under fresh masks; the position
        noise comes from a generator on the images' device seeded from ``generator`` (CPU, the masks')."""
        _, y, z, ctx_idx, tgt_idx = self.head_inputs(images, generator)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        noise_gen = torch.Generator(device=images.device).manual_seed(seed)
        h_noisy, _ = self.noisy_conditions(z, ctx_idx, tgt_idx, noise_gen)
        return h_noisy, y
