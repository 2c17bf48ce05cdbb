"""Mixture density network head (Bishop 1994): K diagonal Gaussians per target token.

    p(y | h) = sum_k pi_k(h) N(y; mu_k(h), diag sigma_k(h)^2)
    pi = softmax(logits),  sigma = softplus(raw) + min_scale   (the floor keeps the
    NLL bounded below when a component shrinks onto a target)
    log p(y | h) = logsumexp_k [log pi_k + sum_d log N(y_d; mu_kd, sigma_kd)]   (exact)

The loss is the per-dimension NLL, -log p / D, plus a log-variance regulariser
logvar_weight * mean((log sigma^2)^2), which pulls scales towards the unit
variance of the layer-normed targets and keeps components from degenerating
(the Probabilistic-JEPA report's MDN). K = 1 is a heteroscedastic Gaussian.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.heads.base import Diagnostics, PredictorHead, check_option, full_precision, is_count, mixture_entropy
from pjepa.heads.registry import HEADS

LOG_2PI = math.log(2 * math.pi)


@HEADS.register("mdn")
class MixtureDensityHead(PredictorHead):
    has_log_prob = True

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        components: int = 5,
        hidden: int = 0,
        min_scale: float = 1e-2,
        logvar_weight: float = 1e-3,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        check_option(is_count(components), "components", components, "need an integer >= 1 (mixture components)")
        check_option(min_scale > 0, "min_scale", min_scale, "the scale floor must be > 0")
        check_option(hidden >= 0, "hidden", hidden, "use 0 (linear head) or a positive width")
        self.K, self.min_scale, self.logvar_weight = components, min_scale, logvar_weight
        width = hidden or cond_dim
        self.body = nn.Sequential(nn.Linear(cond_dim, hidden), nn.GELU()) if hidden else nn.Identity()
        self.logits = nn.Linear(width, components)
        self.mu = nn.Linear(width, components * embed_dim)
        self.raw_sigma = nn.Linear(width, components * embed_dim)
        nn.init.zeros_(self.logits.weight)  # uniform weights at start; means differ by their random init
        nn.init.zeros_(self.logits.bias)
        nn.init.constant_(self.raw_sigma.bias, math.log(math.e - 1))  # softplus -> sigma ~ 1, the target scale

    def params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, M, Dp) -> log_pi (B, M, K), mu (B, M, K, D), sigma (B, M, K, D), all fp32."""
        with full_precision(h):
            f = self.body(h.float())
            log_pi = F.log_softmax(self.logits(f), dim=-1)
            mu = self.mu(f).unflatten(-1, (self.K, self.embed_dim))
            sigma = F.softplus(self.raw_sigma(f).unflatten(-1, (self.K, self.embed_dim))) + self.min_scale
        return log_pi, mu, sigma

    @staticmethod
    def _log_prob(log_pi: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = (y.float().unsqueeze(-2) - mu) / sigma  # (B, M, K, D)
        log_n = -0.5 * (z.pow(2) + LOG_2PI) - sigma.log()
        return torch.logsumexp(log_pi + log_n.sum(-1), dim=-1)  # (B, M)

    def log_prob(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._log_prob(*self.params(h), y)

    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        log_pi, mu, sigma = self.params(h)
        nll = -self._log_prob(log_pi, mu, sigma, y).mean() / self.embed_dim
        log_var = 2 * sigma.log()
        reg = log_var.pow(2).mean()
        entropy = mixture_entropy(log_pi)  # (B, M)
        with torch.no_grad():  # a strided subsample: a per-step sort of every scale is not worth it
            flat = sigma.flatten()
            q = torch.quantile(flat[:: max(1, flat.numel() // 8192)], torch.tensor([0.1, 0.5, 0.9], device=sigma.device))
        diag: Diagnostics = {
            "nll": nll.detach(),
            "logvar_reg": reg.detach(),
            "entropy": entropy.mean().detach(),
            "effective_components": entropy.exp().mean().detach(),
            "sigma_p10": q[0], "sigma_p50": q[1], "sigma_p90": q[2],
        }
        return nll + self.logvar_weight * reg, diag

    @torch.no_grad()
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """The mixture mean sum_k pi_k mu_k (the MSE-optimal point estimate)."""
        log_pi, mu, _ = self.params(h)
        return (log_pi.exp().unsqueeze(-1) * mu).sum(-2).to(h.dtype)

    @torch.no_grad()
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        log_pi, mu, sigma = self.params(h)
        shape = (n, *log_pi.shape)  # (n, B, M, K)
        gumbel = -torch.log(-torch.log(torch.rand(shape, generator=generator, device=h.device).clamp_min(1e-20)))
        k = (log_pi + gumbel).argmax(-1)  # (n, B, M): Gumbel-max draw of the component
        idx = k[..., None, None].expand(*k.shape, 1, self.embed_dim)
        mu_k = torch.gather(mu.expand(n, *mu.shape), -2, idx).squeeze(-2)  # (n, B, M, D)
        sigma_k = torch.gather(sigma.expand(n, *sigma.shape), -2, idx).squeeze(-2)
        eps = torch.randn(mu_k.shape, generator=generator, device=h.device)
        return (mu_k + sigma_k * eps).to(h.dtype)
