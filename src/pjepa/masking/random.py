"""MAE-style random masking: keep a uniformly random subset of patches.

Returns a ``MaskBatch`` with one "target block" holding every masked patch, so
MAE-style methods share the data path of the block maskers.
"""

from __future__ import annotations

import torch

from pjepa.errors import ConfigError
from pjepa.masking.multiblock import MaskBatch
from pjepa.masking.registry import MASKS


class RandomMaskSampler:
    """Mask ``round(mask_ratio * num_patches)`` random patches per sample.

    Args:
        num_patches: N, patches per image.
        mask_ratio: fraction of patches masked, in (0, 1); at least one patch is
            kept and one masked.

    ``__call__`` returns ``ctx_idx`` (B, Nkeep) and ``tgt_idx`` (B, 1, Nmask),
    both sorted ascending per row, disjoint, together all N patches.
    """

    def __init__(self, num_patches: int, mask_ratio: float = 0.75) -> None:
        if not isinstance(num_patches, int) or isinstance(num_patches, bool) or num_patches < 2:
            raise ConfigError(f"num_patches must be an int >= 2, got {num_patches!r}")
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) \
                or not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}")
        self.num_patches = num_patches
        self.mask_ratio = float(mask_ratio)
        num_mask = int(round(mask_ratio * num_patches))
        self.num_mask = min(max(num_mask, 1), num_patches - 1)
        self.num_keep = num_patches - self.num_mask

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        """Sample masks for ``batch_size`` images from ``generator`` (on its device)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        noise = torch.rand(batch_size, self.num_patches, generator=generator,
                           device=generator.device)  # (B, N)
        order = noise.argsort(dim=1)  # (B, N): a random permutation per sample
        ctx_idx = order[:, : self.num_keep].sort(dim=1).values  # (B, Nkeep)
        tgt_idx = order[:, self.num_keep:].sort(dim=1).values  # (B, Nmask)
        stats = {"num_context": float(self.num_keep), "num_target": float(self.num_mask)}
        return MaskBatch(ctx_idx=ctx_idx, tgt_idx=tgt_idx.unsqueeze(1), stats=stats)

    def __repr__(self) -> str:
        return f"RandomMaskSampler(num_patches={self.num_patches}, mask_ratio={self.mask_ratio})"


@MASKS.register("random")
def random_masks(grid_size: int, mask_ratio: float = 0.75) -> RandomMaskSampler:
    """MAE random masking on a square ``grid_size`` grid: one target "block" of every masked patch."""
    return RandomMaskSampler(grid_size * grid_size, mask_ratio)
