"""Building blocks shared by the probabilistic heads.

- ``ActNorm`` (Kingma & Dhariwal 2018, Glow sec. 3.1): a per-dimension affine
  map initialised from the first training batch so its output has zero mean and
  unit variance; invertible with a known log-determinant, so heads with exact
  likelihoods can use it on the embedding coordinates.
- ``FiLM`` (Perez et al. 2018): feature-wise scale and shift computed from the
  trunk's conditioning vector; initialised near the identity (small weights,
  zero bias) so a head starts almost unconditioned yet gradients reach ``h``.
- ``sinusoidal_embedding``: the Transformer / DDPM timestep embedding (defined in
  ``pjepa.models.diffusion``, which the generative study shares).
- ``ResidualMLPBlock``: pre-norm residual MLP with FiLM, the denoiser /
  velocity-field body of the diffusion and flow-matching heads.
- ``base_draws``: the rows a transport head (RealNVP flow, flow matching) maps
  from its N(0, I) base to targets, with the condition of each row.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from pjepa.models.diffusion import sinusoidal_embedding  # noqa: F401  (the heads' timestep embedding)


class ActNorm(nn.Module):
    """z = (x - bias) * exp(-log_scale), per dimension, over the last axis.

    The first forward call in training mode sets ``bias`` / ``log_scale`` to the
    batch mean / log std (averaged over ranks under torch.distributed, so every
    replica starts identical). The flag is a buffer, so checkpoints keep it.
    """

    initialized: torch.Tensor  # a buffer (nn.Module types attribute access as Tensor | Module)

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps
        # A host-side copy of ``initialized`` once it is known to be True, so that training steps after the
        # first never read the buffer back from the device; loading a state dict makes it unknown again.
        self._known_initialized = False
        self._register_load_state_dict_pre_hook(self._forget_initialized)

    def _forget_initialized(self, *args: object, **kwargs: object) -> None:
        self._known_initialized = False

    @torch.no_grad()
    def _init_from(self, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(-1, x.shape[-1])  # (T, D)
        stats = torch.stack([flat.mean(0), flat.pow(2).mean(0)])  # (2, D): E[x], E[x^2]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        mean, sq = stats
        std = (sq - mean.pow(2)).clamp_min(0).sqrt() + self.eps
        self.bias.copy_(mean)
        self.log_scale.copy_(std.log())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D) -> z (..., D), log|det dz/dx| (scalar, the same for every row)."""
        if self.training and not self._known_initialized:
            if not bool(self.initialized):  # read back once per module (or per loaded state), not per step
                self._init_from(x)
            self._known_initialized = True
        z = (x - self.bias) * torch.exp(-self.log_scale)
        return z, -self.log_scale.sum()

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.exp(self.log_scale) + self.bias


class FiLM(nn.Module):
    """x * (1 + gamma(c)) + beta(c); near the identity at start (std-0.02 weights)."""

    def __init__(self, cond_dim: int, features: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * features)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(c).chunk(2, dim=-1)
        return x * (1 + gamma) + beta


class ResidualMLPBlock(nn.Module):
    """x + W2 act(FiLM(W1 LN(x), c)); the output projection starts at zero."""

    def __init__(self, width: int, cond_dim: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.film = FiLM(cond_dim, hidden)
        self.fc2 = nn.Linear(hidden, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.silu(self.film(self.fc1(self.norm(x)), c)))


def base_draws(
    h: torch.Tensor, n: int, dim: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, Dp) conditions -> z ~ N(0, I) (n*B*M, D) and each row's condition (n*B*M, Dp).

    Draw k of token (b, m) is row (k, b, m) flattened, so ``x.reshape(n, B, M, D)``
    restores the layout of ``sample``; all n draws go through the head as one batch.
    """
    lead = h.shape[:-1]
    z = torch.randn((n, *lead, dim), generator=generator, device=h.device).reshape(-1, dim)
    rows = h.reshape(1, -1, h.shape[-1]).expand(n, -1, -1).reshape(z.shape[0], -1)
    return z, rows
