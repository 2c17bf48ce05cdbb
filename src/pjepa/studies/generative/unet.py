"""A time-conditional UNet over small (B, C, K, K) latent maps: the study's diffusion backbone.

jepa-embeddings-generative-study, sec. 3: "we follow the same recipe as [12]
(latent diffusion) which uses a time-conditional UNet backbone [13]"; sec. 4.2:
"roughly 37M parameter diffusion model using a UNet backbone with 4 upsampling
(and downsampling)" levels, over 16 x 16 x 16 latents. The layout here is the
one latent diffusion inherits from ADM (Dhariwal & Nichol 2021):

- time: sinusoidal(t) -> Linear -> SiLU -> Linear, width 4 * base_channels;
- class (optional): ``nn.Embedding(num_classes + 1, ...)`` added to the time
  embedding; index ``num_classes`` is the null label that classifier-free
  guidance trains and samples with (Ho & Salimans 2022). The document passes
  labels through cross-attention with an encoder tau(y); for a single class
  token, cross-attention returns the same vector W_o W_v tau(y) at every
  position (softmax over one key is 1), i.e. a per-class shift, which the
  embedding + FiLM below also gives;
- ResBlocks: GroupNorm -> SiLU -> 3x3 conv -> GroupNorm scaled and shifted by
  the embedding (FiLM, ADM's ``use_scale_shift_norm``) -> SiLU -> 3x3 conv
  started at zero, plus a (1x1 when channels change) skip;
- ``num_res_blocks`` per level with widths base_channels * channel_mults[i],
  a stride-2 3x3 conv between levels, the mirror on the way up with skip
  concatenation, a middle ResBlock - attention - ResBlock;
- ``attention``: self-attention (``num_heads`` heads, SDPA) at the lowest
  resolution only (the maps are small; attention there costs (K / 2^L)^4);
- the output 3x3 conv starts at zero, so the untrained net predicts 0.

Odd sizes: each stride-2 conv maps K to ceil(K / 2) (7 -> 4, 14 -> 7 -> 4),
and each upsampling goes to the exact size of the skip it meets (nearest,
then a 3x3 conv), so any K works. The lowest resolution must stay at least
2 x 2 (at 1 x 1 GroupNorm over one pixel and a 3x3 conv carry little), so
len(channel_mults) is limited by K: 3 levels at K = 7 or 8, 4 at K = 14 or 16.

Sizes: the CPU-small default (base 64, mults (1, 2), one ResBlock per level,
attention) has 3.0 M parameters at 16 latent channels. The document gives only
"about 37 M parameters" and 4 levels (its configuration is in its repository,
not its text); ``DOCUMENT_UNET`` (base 128, mults (1, 2, 2, 2), two ResBlocks
per level, attention) is a 4-level net of that size: 38.3 M parameters at 16
latent channels (K = 16: 16 -> 8 -> 4 -> 2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.errors import ConfigError
from pjepa.models.diffusion import sinusoidal_embedding

#: A backbone of the document's size (4 levels, 38.3 M parameters at 16 channels; module docstring).
DOCUMENT_UNET = {"base_channels": 128, "channel_mults": (1, 2, 2, 2), "num_res_blocks": 2, "attention": True}
#: The smallest side the lowest UNet level may have.
MIN_LOWEST = 2


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (ADM's count), fewer when the channels do not divide by 32."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero(module: nn.Module) -> nn.Module:
    """The module with weights and biases set to zero (its residual branch starts as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """(B, Ci, H, W), (B, E) -> (B, Co, H, W); the embedding scales and shifts the second GroupNorm."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.drop = group_norm(c_out), nn.Dropout(dropout)
        self.conv2 = zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, Co, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the H * W positions, residual: (B, C, H, W) -> same."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.heads, self.norm = num_heads, group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class Level(nn.Module):
    """ResBlocks, each followed by attention when ``attention``: (B, Ci, H, W), (B, E) -> (B, Co, H, W) per block."""

    def __init__(self, widths: list[tuple[int, int]], emb_dim: int, dropout: float, attention: bool,
                 num_heads: int) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(ci, co, emb_dim, dropout) for ci, co in widths)
        self.attn = nn.ModuleList(SelfAttention(co, num_heads) if attention else nn.Identity() for _, co in widths)


def lowest_size(size: int, levels: int) -> int:
    """The side of the lowest level: ``size`` halved (rounding up) levels - 1 times."""
    for _ in range(levels - 1):
        size = (size + 1) // 2
    return size


class UNet(nn.Module):
    """eps_theta(z_t, t, y): (B, C, K, K) latents, (B,) long steps, (B,) long labels or None -> (B, C, K, K).

    ``size`` is K, checked against ``channel_mults`` (module docstring).
    ``num_classes`` > 0 makes the net class-conditional; label ``num_classes``
    (``null_label``) is the unconditional one, and ``labels=None`` means it.
    """

    def __init__(self, in_channels: int, size: int, base_channels: int = 64, channel_mults: tuple[int, ...] = (1, 2),
                 num_res_blocks: int = 1, attention: bool = True, num_heads: int = 4, num_classes: int = 0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        mults = tuple(channel_mults)
        self._check(in_channels, size, base_channels, mults, num_res_blocks, attention, num_heads, num_classes)
        self.in_channels, self.size, self.num_classes = in_channels, size, num_classes
        self.base = base_channels
        emb = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(num_classes + 1, emb) if num_classes > 0 else None
        self.inp = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in mults]
        last = len(mults) - 1
        skips, c = [base_channels], base_channels  # skips: the width of every saved activation
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            pairs = [(c, w)] + [(w, w)] * (num_res_blocks - 1)
            self.down.append(Level(pairs, emb, dropout, attention and i == last, num_heads))
            c = w
            skips += [w] * num_res_blocks
            if i < last:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = Level([(c, c), (c, c)], emb, dropout, False, num_heads)
        self.mid_attn = SelfAttention(c, num_heads) if attention else nn.Identity()
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            pairs = []
            for _ in range(num_res_blocks + 1):
                pairs.append((c + skips.pop(), w))
                c = w
            self.up.append(Level(pairs, emb, dropout, attention and i == last, num_heads))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out = nn.Sequential(group_norm(c), nn.SiLU(), zero(nn.Conv2d(c, in_channels, 3, padding=1)))

    @staticmethod
    def _check(in_channels: int, size: int, base: int, mults: tuple[int, ...], blocks: int, attention: bool,
               heads: int, num_classes: int) -> None:
        if in_channels < 1 or base < 1 or blocks < 1 or num_classes < 0 or not mults or min(mults) < 1:
            raise ConfigError(f"unet in_channels={in_channels}, base_channels={base}, channel_mults={mults}, "
                              f"num_res_blocks={blocks}, num_classes={num_classes}: need positive channels, "
                              "multipliers and block counts, and num_classes >= 0 (0 = unconditional)")
        if size < MIN_LOWEST:
            raise ConfigError(f"unet size={size}: latent maps must be at least {MIN_LOWEST}x{MIN_LOWEST}")
        low = lowest_size(size, len(mults))
        if low < MIN_LOWEST:
            fit = max(n for n in range(1, len(mults)) if lowest_size(size, n) >= MIN_LOWEST)
            raise ConfigError(f"unet channel_mults={mults} with latent size K={size}: {len(mults)} levels halve "
                              f"{size}x{size} down to {low}x{low}, below {MIN_LOWEST}x{MIN_LOWEST}; use at most "
                              f"{fit} level(s) (e.g. channel_mults={mults[:fit]}) or larger latent maps")
        if attention and (base * mults[-1]) % heads:
            raise ConfigError(f"unet num_heads={heads}: the lowest level's {base * mults[-1]} channels "
                              "(base_channels * channel_mults[-1]) must divide by it")

    @property
    def null_label(self) -> int:
        """The label index that means "no class" (classifier-free guidance's unconditional branch)."""
        return self.num_classes

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(B,) steps and labels -> (B, 4 * base_channels) conditioning."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.base))
        if self.label_emb is None:
            if labels is not None:
                raise ConfigError("unet got class labels but was built with num_classes=0; set num_classes")
            return emb
        if labels is None:
            labels = torch.full_like(t, self.null_label)
        return emb + self.label_emb(labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.size, self.size):
            raise ConfigError(f"unet input of shape {tuple(x.shape)}: built for (B, {self.in_channels}, "
                              f"{self.size}, {self.size}) (in_channels, size)")
        emb = self.embed(t, labels)
        h = self.inp(x)
        skips = [h]
        for i, level in enumerate(cast(Iterable[Level], self.down)):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid.res[1](self.mid_attn(self.mid.res[0](h, emb)), emb)
        for i, level in enumerate(cast(Iterable[Level], self.up)):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):  # to the exact size of the next skip: ceil-halving is not invertible by 2x
                h = self.upsample[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.out(h)
