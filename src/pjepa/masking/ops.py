"""Tensor operations shared by the maskers, encoders and predictors.

``apply_masks`` picks tokens by patch index; ``block_attention_mask`` lets a
predictor handle all target blocks of a sample in one forward pass.
"""

from __future__ import annotations

import torch


def apply_masks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather tokens along the token axis.

    Args:
        x: (B, N, D) tokens.
        idx: (B, K) long indices into [0, N); one row of indices per sample.

    Returns:
        (B, K, D) with ``out[b, k] = x[b, idx[b, k]]``.
    """
    if x.dim() != 3 or idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(
            f"apply_masks expects x (B, N, D) and idx (B, K); got x {tuple(x.shape)} "
            f"and idx {tuple(idx.shape)}"
        )
    index = idx.long().unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (B, K, D)
    return torch.gather(x, dim=1, index=index)


def block_attention_mask(
    num_ctx: int, num_blocks: int, block_len: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean attention mask for [context, block 0, ..., block M-1] in one pass.

    The sequence is ``num_ctx`` context tokens followed by ``num_blocks`` target
    blocks of ``block_len`` mask tokens each; ``L = num_ctx + num_blocks * block_len``.
    ``mask[i, j]`` is True when query ``i`` may attend to key ``j``:

    * context rows attend to context columns only;
    * rows of block ``j`` attend to every context column and to block ``j``'s
      own columns, nothing else.

    What it computes: exactly what a separate pass per target block over
    ``[context, mask tokens of that block]`` computes when, in that pass, context
    tokens attend only to context. Context states then never depend on which
    block is predicted, so in every layer they are the same for all blocks and
    can be shared; block ``j``'s rows attend to exactly the keys of its own pass.
    By induction over layers each block's outputs equal those of its separate
    pass, while the context is encoded once instead of ``num_blocks`` times.
    (The official I-JEPA predictor also lets context tokens attend to the mask
    tokens of the block; that variant is ``model.predictor.layout="per_block"`` in
    :class:`pjepa.models.PredictorTrunk`.) Position-wise layers need no mask.

    Use it as ``attn_mask`` of ``F.scaled_dot_product_attention`` (True = take
    part). ``nn.MultiheadAttention`` uses the opposite convention: pass ``~mask``.

    Returns:
        (L, L) bool tensor on ``device``.
    """
    for name, value, low in (("num_ctx", num_ctx, 1), ("num_blocks", num_blocks, 0),
                             ("block_len", block_len, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"block_attention_mask: {name} must be an int >= {low}, got {value!r}")
    ctx_group = torch.full((num_ctx,), -1, dtype=torch.long, device=device)
    blk_group = torch.arange(num_blocks, device=device).repeat_interleave(block_len)
    group = torch.cat([ctx_group, blk_group])  # (L,): -1 = context, j = block j
    to_context = (group == -1).unsqueeze(0)  # (1, L): key is a context token
    same_group = group.unsqueeze(1) == group.unsqueeze(0)  # (L, L)
    # A context row has group -1, so ``same_group`` only adds context keys to it.
    return to_context | same_group


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p * p * C) patches in row-major grid order, each flattened as (p, p, C)
    (MAE's layout; N = (H / p) * (W / p), the order of the encoder's patch tokens)."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"patchify: image {H}x{W} is not a multiple of patch size {p}")
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)
