"""Vision Transformer encoder (Dosovitskiy et al. 2021) with SDPA attention.

Pre-norm blocks, fixed 2-D sin-cos positions, no class token (I-JEPA uses the
patch tokens; features for evaluation are their average). ``forward`` takes
optional patch indices so the context encoder only processes visible patches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.masking.ops import apply_masks
from pjepa.models.pos_embed import sincos_2d


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) [masked]) v: (B, h, L, d) x3, mask (L, L) / (B, 1, L, L) bool (True = attend)
    -> (B, h, L, d).

    ``F.scaled_dot_product_attention`` everywhere except on a CPU in reduced precision (bf16 autocast):
    there the fused kernel's backward runs 3-6x slower than in fp32, which cancels bf16's gain
    (docs/speed.md). The scores are then formed with plain bf16 matmuls and the
    softmax taken in fp32, as the fused kernel accumulates it.
    """
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).float()  # (B, h, L, L)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return scores.softmax(dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, D/heads)
        out = attention(q, k, v, attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): zero a residual branch for a random ``rate`` of the samples
    and rescale the rest by 1 / (1 - rate), so the expectation is unchanged. (B, ...) -> (B, ...)."""
    if rate <= 0.0 or not training:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype) >= rate
    return x * keep / (1.0 - rate)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); each branch dropped per
    sample with probability ``drop_path`` while training (stochastic depth, fine-tuning only)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.drop_rate = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), attn_mask), self.drop_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_rate, self.training)


#: Initialisations: ``pjepa`` leaves the patch embedding at PyTorch's Conv2d default (Kaiming-uniform);
#: ``official`` truncated-normal(0.02) as the official I-JEPA code (``_init_weights``).
INIT_SCHEMES = ("pjepa", "official")


def rescale_residual_branches(blocks: nn.ModuleList) -> None:
    """Divide block i's (1-based) residual output layers by sqrt(2 i): I-JEPA's ``fix_init_weight``."""
    for i, block in enumerate(cast(Iterable[Block], blocks), start=1):
        block.attn.proj.weight.data.div_((2.0 * i) ** 0.5)
        cast(nn.Linear, block.mlp[2]).weight.data.div_((2.0 * i) ** 0.5)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) linears, zero biases, unit LayerNorms (ViT/I-JEPA)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """ViT over a (img_size / patch_size)^2 grid of patches.

    Args:
        img_size: square input resolution in pixels.
        patch_size: square patch side; ``img_size`` must be a multiple.
        embed_dim, depth, num_heads, mlp_ratio: the usual ViT sizes.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first
            (fine-tuning; pretraining uses 0).
        init_scheme: ``pjepa`` or ``official`` (the patch embedding truncated-normal(0.02)).

    ``pos_embed`` (1, N, D) is a buffer saved with the weights: it is the fixed 2-D sin-cos
    embedding of ``models.pos_embed`` unless weights imported from elsewhere (the official
    I-JEPA and MAE order the sin-cos halves the other way round) bring their own.
    """

    def __init__(
        self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0, init_scheme: str = "pjepa",
    ) -> None:
        super().__init__()
        if init_scheme not in INIT_SCHEMES:
            raise ValueError(f"model.init_scheme={init_scheme!r}: choose one of {', '.join(INIT_SCHEMES)}")
        if img_size % patch_size != 0:
            raise ValueError(
                f"image size {img_size} is not a multiple of patch size {patch_size} "
                "(set data.image_size / model.patch_size)"
            )
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.embed_dim = embed_dim
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid_size, self.grid_size)[None])  # (1, N, D)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, rate) for rate in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(init_weights)
        rescale_residual_branches(self.blocks)
        if init_scheme == "official":
            nn.init.trunc_normal_(self.patch_embed.weight, std=0.02)
            if self.patch_embed.bias is not None:  # always (bias=True above); the check is for the type
                nn.init.zeros_(self.patch_embed.bias)

    def _tokens(self, images: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.pos_embed
        return x if idx is None else apply_masks(x, idx)  # (B, K, D)

    def forward(self, images: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images [, (B, K) kept patch indices] -> (B, K or N, D) tokens."""
        x = self._tokens(images, idx)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def intermediate_layers(self, images: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the outputs of the last ``n`` blocks, each (B, N, D) and passed through the
        final norm (as dinov2's ``get_intermediate_layers``); the last entry equals ``forward``."""
        if not 1 <= n <= len(self.blocks):
            raise ValueError(f"n={n} layers: choose 1..{len(self.blocks)} (the encoder's depth)")
        x, out = self._tokens(images, None), []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                out.append(self.norm(x))
        return out
