"""Autoregressive head: a conditional RNADE / MADE density over the D coordinates of y.

p(y | h) = |det dz/dy| * prod_d p(z_d | z_<d, h),   z = ActNorm(y)

Each conditional p(z_d | z_<d, h) is a mixture of K Gaussians or K logistics
(RNADE, Uria et al. 2013) whose logits / locations / scales for every d come
out of one masked MLP (MADE, Germain et al. 2015): input degrees 1..D, hidden
degrees 0..D-1, and output d only sees hidden units of degree < d, so a single
forward pass gives all D conditionals and the log-likelihood is exact by the
chain rule. The trunk's ``h`` enters every hidden layer through FiLM (Perez et
al. 2018) plus an unmasked additive projection into the first one; hidden
units of degree 0 see only ``h``, which is what makes coordinate 1 (no y
inputs) an MLP of ``h``. An ActNorm on y (Glow) keeps the likelihood exact in
y-space through its log-determinant.

Why this head: an exact, cheap log-likelihood (one pass) with multi-modal
per-coordinate conditionals. The price is sampling: coordinate d needs z_<d,
so a draw takes D sequential steps. ``sample`` / ``predict`` keep that exact
but cheap by caching hidden activations: a unit of degree m depends only on
z_1..z_m, so step d computes only the units of degree d-1 (about hidden / D
per layer) and the D steps together cost about one full forward pass.

The reference variant of the paper is ``hidden=600, depth=6``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.heads.base import Diagnostics, PredictorHead, check_option, full_precision, is_count, mixture_entropy
from pjepa.heads.layers import ActNorm, FiLM
from pjepa.heads.registry import HEADS

FAMILIES = ("gaussian", "logistic")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# pick(logits, loc, scale), each (R, K) -> (R,) value of one coordinate
Picker = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def hidden_degrees(hidden: int, dim: int) -> torch.Tensor:
    """(hidden,) sorted degrees spread evenly over 0..dim-1 (every degree present when hidden >= dim).

    A unit of degree m sees y coordinates 1..m (0: only ``h``). Sorted, so the
    units of one degree are a contiguous slice, which the sequential samplers use.
    """
    return torch.arange(hidden, device="cpu") * dim // hidden  # CPU bookkeeping, also when built on "meta"


class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    mask: torch.Tensor  # a buffer

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        # A deterministic function of the options: not saved in checkpoints.
        self.register_buffer("mask", mask.float(), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


@HEADS.register("autoregressive")
class AutoregressiveHead(PredictorHead):
    """Conditional MADE with mixture-of-K conditionals per coordinate (see module docstring).

    Args:
        hidden: width of each masked hidden layer (any >= 1).
        depth: number of masked hidden layers (>= 1); layers after the first are residual.
        components: mixture components K per coordinate.
        family: ``gaussian`` or ``logistic`` components.
        min_scale: floor added to every component scale (softplus(raw) + min_scale).
        actnorm: standardise y with an ActNorm (its log-det keeps the likelihood exact).
    """

    has_log_prob = True

    def __init__(
        self,
        cond_dim: int,
        embed_dim: int,
        hidden: int = 256,
        depth: int = 2,
        components: int = 3,
        family: str = "gaussian",
        min_scale: float = 1e-3,
        actnorm: bool = True,
    ) -> None:
        super().__init__(cond_dim, embed_dim)
        check_option(is_count(hidden), "hidden", hidden, "must be an integer >= 1")
        check_option(is_count(depth), "depth", depth, "must be an integer >= 1 (masked hidden layers)")
        check_option(is_count(components), "components", components, "must be an integer >= 1")
        check_option(family in FAMILIES, "family", family, "choose gaussian or logistic")
        check_option(isinstance(min_scale, (int, float)) and not isinstance(min_scale, bool) and min_scale > 0,
                     "min_scale", min_scale, "must be a number > 0")
        check_option(isinstance(actnorm, bool), "actnorm", actnorm, "must be true or false")
        self.hidden, self.depth, self.components = hidden, depth, components
        self.family, self.min_scale = family, float(min_scale)
        self.actnorm = ActNorm(embed_dim) if actnorm else None
        self._build(cond_dim, embed_dim, hidden, depth, components)

    def _build(self, cond_dim: int, dim: int, hidden: int, depth: int, k: int) -> None:
        deg = hidden_degrees(hidden, dim)  # (H,)
        inp = torch.arange(1, dim + 1, device="cpu")  # (D,) input degrees 1..D
        out = inp.repeat_interleave(3 * k)  # (D*3K,) row d*3K + p belongs to coordinate d+1
        # units of degree m: the slice starts[m]:starts[m+1] (a Python list: no device syncs when sampling)
        self.starts: list[int] = torch.searchsorted(deg, torch.arange(dim + 1, device="cpu")).tolist()  # D+1 entries
        self.layers = nn.ModuleList(
            [MaskedLinear(dim, hidden, deg[:, None] >= inp[None, :])]
            + [MaskedLinear(hidden, hidden, deg[:, None] >= deg[None, :]) for _ in range(depth - 1)]
        )
        self.films = nn.ModuleList([FiLM(cond_dim, hidden) for _ in range(depth)])
        self.cond_in = nn.Linear(cond_dim, hidden)  # unmasked: h reaches every unit, degree 0 included
        self.out = MaskedLinear(hidden, dim * 3 * k, deg[None, :] < out[:, None])
        self.direct = MaskedLinear(dim, dim * 3 * k, inp[None, :] < out[:, None], bias=False)  # z_<d -> out_d
        self._init_output(dim, k)

    @torch.no_grad()
    def _init_output(self, dim: int, k: int) -> None:
        """Start near a fixed mixture: locs spread over [-1, 1], scales ~1, equal weights."""
        nn.init.trunc_normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.direct.weight)
        bias = self.out.bias.view(dim, 3, k)
        bias[:, 0].zero_()
        bias[:, 1].copy_(torch.linspace(-1.0, 1.0, k) if k > 1 else torch.zeros(1))
        bias[:, 2].fill_(math.log(math.expm1(1.0)))  # softplus^-1(1)

    # ------------------------------------------------------------------ density

    def _params(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T, D) normalised targets, (T, Dp) conditions -> logits, loc, scale, each (T, D, K).

        Output d depends on z_<d only (MADE masks) and on c everywhere.
        """
        x = z
        for i, (layer, film) in enumerate(zip(self.layers, self.films)):
            pre = layer(x)  # (T, H)
            if i == 0:
                pre = pre + self.cond_in(c)
            a = F.silu(film(pre, c))
            x = a if i == 0 else x + a
        raw = self.out(x) + self.direct(z)  # (T, D*3K)
        return self._split(raw.view(*z.shape, 3, self.components), dim=-2)

    def _split(self, raw: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, loc, raw_scale = raw.unbind(dim)
        return logits, loc, F.softplus(raw_scale) + self.min_scale

    def _component_log_prob(self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x (..., 1) against K components (..., K) -> (..., K) log-densities."""
        u = (x - loc) / scale
        if self.family == "gaussian":
            return -0.5 * u.pow(2) - scale.log() - _HALF_LOG_2PI
        return -u - scale.log() - 2 * F.softplus(-u)

    def _normalise(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, D) -> z (T, D), log|det dz/dy| (scalar)."""
        if self.actnorm is None:
            return y, y.new_zeros(())
        return self.actnorm(y)

    def _log_prob_terms(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, M, Dp), (B, M, D) -> log p (T,), logits (T, D, K), scale (T, D, K); fp32."""
        c = h.float().reshape(-1, h.shape[-1])  # (T, Dp)
        z, logdet = self._normalise(y.float().reshape(-1, y.shape[-1]))  # (T, D), ()
        logits, loc, scale = self._params(z, c)
        comp = F.log_softmax(logits, dim=-1) + self._component_log_prob(z.unsqueeze(-1), loc, scale)
        lp = torch.logsumexp(comp, dim=-1).sum(-1) + logdet  # (T,)
        return lp, logits, scale

    def log_prob(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with full_precision(h):
            lp, _, _ = self._log_prob_terms(h, y)
        return lp.view(h.shape[:-1])  # (B, M)

    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        with full_precision(h):
            lp, logits, scale = self._log_prob_terms(h, y)
            nll = -lp.mean() / self.embed_dim  # per dimension: comparable across D
            with torch.no_grad():
                entropy = mixture_entropy(F.log_softmax(logits, dim=-1))  # (T, D)
                diag: Diagnostics = {
                    "nll": nll.detach(),
                    "effective_components": entropy.exp().mean(),
                    "log_scale": scale.log().mean(),
                }
        return nll, diag

    # ------------------------------------------------------------- sequential

    def _cond_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the h-projections arranged (H, k, Dp) / (H, k) so a unit slice is contiguous.

        Layer 0: k = 3 (additive, FiLM gamma, FiLM beta); later layers: k = 2 (gamma, beta).
        """
        out = []
        for i, film in enumerate(cast(Iterable[FiLM], self.films)):
            w = film.proj.weight.view(2, self.hidden, -1)  # (2, H, Dp): gamma rows, beta rows
            b = film.proj.bias.view(2, self.hidden)
            if i == 0:
                w = torch.cat([self.cond_in.weight[None], w])  # (3, H, Dp)
                b = torch.cat([self.cond_in.bias[None], b])
            out.append((w.transpose(0, 1).contiguous(), b.T.contiguous()))
        return out

    def _grow_units(self, xs: list[torch.Tensor], z: torch.Tensor, c: torch.Tensor, d: int,
                    weights: list[torch.Tensor], cond: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fill in place the hidden units of degree d (they see z_<d, 0-based), in every layer.

        xs: per layer (R, H) activation caches; units of degree < d are already there.
        """
        s, e = self.starts[d], self.starts[d + 1]
        if s == e:
            return
        for i, (x, w, layer) in enumerate(zip(xs, weights, cast(Iterable[MaskedLinear], self.layers))):
            cw, cb = cond[i]
            proj = F.linear(c, cw[s:e].flatten(0, 1), cb[s:e].flatten()).view(c.shape[0], e - s, -1)  # (R, n, k)
            if i == 0:
                pre = F.linear(z[:, :d], w[s:e, :d], layer.bias[s:e]) + proj[..., 0]  # (R, n)
                x[:, s:e] = F.silu(pre * (1 + proj[..., 1]) + proj[..., 2])
            else:
                pre = F.linear(xs[i - 1][:, :e], w[s:e, :e], layer.bias[s:e])
                x[:, s:e] = xs[i - 1][:, s:e] + F.silu(pre * (1 + proj[..., 0]) + proj[..., 1])

    def _sequential(self, c: torch.Tensor, pick: Picker) -> torch.Tensor:
        """(R, Dp) fp32 conditions -> (R, D) normalised z, coordinate by coordinate.

        Exactly the chain of conditionals of ``_params``, computed incrementally:
        step d adds the hidden units of degree d, then reads out coordinate d.
        """
        R, D, K = c.shape[0], self.embed_dim, self.components
        z = c.new_zeros(R, D)
        xs = [c.new_zeros(R, self.hidden) for _ in self.layers]  # (R, H) per layer
        weights = [layer.masked_weight() for layer in cast(Iterable[MaskedLinear], self.layers)]
        cond = self._cond_weights()
        w_out, w_dir, b_out = self.out.masked_weight(), self.direct.masked_weight(), self.out.bias
        for d in range(D):
            self._grow_units(xs, z, c, d, weights, cond)
            e, rows = self.starts[d + 1], slice(3 * K * d, 3 * K * (d + 1))
            raw = F.linear(xs[-1][:, :e], w_out[rows, :e], b_out[rows]) + F.linear(z[:, :d], w_dir[rows, :d])
            z[:, d] = pick(*self._split(raw.view(R, 3, K), dim=1))
        return z

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.actnorm is None else self.actnorm.inverse(z)

    def _draw(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        """(R, K) mixture parameters -> (R,) one exact draw: Gumbel-max component, then its noise."""
        R, K = logits.shape
        tiny = torch.finfo(logits.dtype).tiny
        u = torch.rand(R, K, generator=generator, device=logits.device).clamp_min(tiny)
        k = torch.argmax(logits - torch.log(-torch.log(u)), dim=-1, keepdim=True)  # (R, 1)
        mu, s = loc.gather(-1, k).squeeze(-1), scale.gather(-1, k).squeeze(-1)  # (R,)
        if self.family == "gaussian":
            return mu + s * torch.randn(R, generator=generator, device=logits.device)
        v = torch.rand(R, generator=generator, device=logits.device).clamp_min(tiny)
        return mu + s * (torch.log(v) - torch.log1p(-v))

    @torch.no_grad()
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, M, Dp) -> (n, B, M, D): D sequential steps over all n*B*M rows at once."""
        lead = h.shape[:-1]
        with full_precision(h):
            c = h.float().reshape(1, -1, h.shape[-1]).expand(n, -1, -1).reshape(-1, h.shape[-1])  # (n*T, Dp)
            z = self._sequential(c, lambda lg, mu, s: self._draw(lg, mu, s, generator))
            y = self._denormalise(z)
        return y.view(n, *lead, self.embed_dim)

    @torch.no_grad()
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, M, Dp) -> (B, M, D) plug-in point estimate (not the joint mean).

        Coordinate by coordinate, z_d is set to the mean of its conditional
        mixture given the already-set z_<d; then ActNorm is inverted. Exact for
        D = 1; for D > 1 it is the greedy "conditional-mean chain", cheap (one
        sequential pass) and deterministic, unlike a Monte-Carlo mean of samples.
        """
        with full_precision(h):
            c = h.float().reshape(-1, h.shape[-1])  # (T, Dp)
            z = self._sequential(c, lambda lg, mu, s: (F.softmax(lg, dim=-1) * mu).sum(-1))
            y = self._denormalise(z)
        return y.view(*h.shape[:-1], self.embed_dim)
