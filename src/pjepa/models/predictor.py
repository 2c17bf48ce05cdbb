"""The predictor trunk of I-JEPA: a narrow ViT over context + mask tokens.

Context tokens (encoder width D) are projected to the predictor width Dp; each
target position gets the shared learned mask token plus that position's fixed
sin-cos embedding. The trunk's output at the target tokens is the conditioning
vector ``h`` of the head, which models p(y | h) (docs/design.md).

Two layouts compute the same kind of prediction:

- ``per_block`` (the official I-JEPA layout): one pass per target block, the
  context repeated for each, full attention within a pass.
- ``joint`` (default): one pass over [context, block 1, ..., block M] with a
  block attention mask: context rows see only context, block j rows see the
  context and block j. The context is processed once instead of M times.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pjepa.masking.ops import apply_masks, block_attention_mask
from pjepa.models.pos_embed import sincos_2d
from pjepa.models.vit import INIT_SCHEMES, Block, init_weights, rescale_residual_branches


class PredictorTrunk(nn.Module):
    pos_embed: torch.Tensor  # a buffer: fixed sin-cos positions
    mask_token: nn.Parameter | None  # None: the caller passes another trunk's (N-JEPA's shared token)

    def __init__(
        self,
        num_patches: int,
        embed_dim: int,
        pred_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        layout: str = "joint",
        init_scheme: str = "pjepa",
    ) -> None:
        super().__init__()
        if layout not in ("joint", "per_block"):
            raise ValueError(f"model.predictor.layout={layout!r}: choose joint or per_block")
        if init_scheme not in INIT_SCHEMES:
            raise ValueError(f"model.init_scheme={init_scheme!r}: choose one of {', '.join(INIT_SCHEMES)}")
        grid = int(round(num_patches**0.5))
        self.layout = layout
        self.pred_dim = pred_dim
        self.embed = nn.Linear(embed_dim, pred_dim)
        token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.mask_token = token
        self.register_buffer("pos_embed", sincos_2d(pred_dim, grid, grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(pred_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(pred_dim, eps=1e-6)
        self.apply(init_weights)
        nn.init.trunc_normal_(token, std=0.02)
        if init_scheme == "official":  # the official predictor rescales its residual branches by depth too
            rescale_residual_branches(self.blocks)

    def _run(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.norm(x)

    def target_positions(self, tgt_idx: torch.Tensor) -> torch.Tensor:
        """(B, M, Nt) target patch indices -> (B, M * Nt, Dp) their fixed sin-cos position embeddings."""
        B, M, Nt = tgt_idx.shape
        return apply_masks(self.pos_embed.expand(B, -1, -1), tgt_idx.reshape(B, M * Nt))

    def forward(
        self,
        ctx: torch.Tensor,
        ctx_idx: torch.Tensor,
        tgt_idx: torch.Tensor,
        tgt_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict conditioning vectors for every target token.

        Args:
            ctx: (B, Nc, D) context-encoder tokens.
            ctx_idx: (B, Nc) their patch indices.
            tgt_idx: (B, M, Nt) patch indices of M target blocks.
            tgt_pos: (B, M * Nt, Dp) position embeddings of the target queries in place of
                ``target_positions(tgt_idx)`` (N-JEPA passes noisy ones); None = the clean ones.
            mask_token: (1, 1, Dp) in place of this trunk's own (N-JEPA's shared-token option).
        Returns:
            h: (B, M * Nt, Dp), block-major (block 0's tokens first).
        """
        B, M, Nt = tgt_idx.shape
        Nc = ctx.shape[1]
        pos = self.pos_embed.expand(B, -1, -1)  # (B, N, Dp)
        z = self.embed(ctx) + apply_masks(pos, ctx_idx)  # (B, Nc, Dp)
        if tgt_pos is None:
            tgt_pos = self.target_positions(tgt_idx)
        token = self.mask_token if mask_token is None else mask_token
        if token is None:
            raise ValueError("this trunk's own mask token was removed (a shared one): pass mask_token")
        queries = token + tgt_pos  # (B, M*Nt, Dp)
        if self.layout == "joint":
            mask = block_attention_mask(Nc, M, Nt, device=ctx.device)  # (L, L)
            out = self._run(torch.cat([z, queries], dim=1), mask)
            return out[:, Nc:]  # (B, M*Nt, Dp)
        # per_block: (B*M, Nc + Nt) sequences, the context repeated per block.
        z_rep = z.repeat_interleave(M, dim=0)  # (B*M, Nc, Dp)
        q_blocks = queries.reshape(B * M, Nt, -1)  # (B*M, Nt, Dp)
        out = self._run(torch.cat([z_rep, q_blocks], dim=1), None)[:, Nc:]  # (B*M, Nt, Dp)
        return out.reshape(B, M * Nt, -1)
