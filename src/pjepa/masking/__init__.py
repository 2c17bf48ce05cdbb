"""Mask samplers (which patches are context, which are targets) and mask ops."""

from pjepa.masking.multiblock import (
    MaskBatch,
    MultiBlockMaskSampler,
    block_indices,
    block_masks,
    block_size,
    keep_random_subset,
)
from pjepa.masking.ops import apply_masks, block_attention_mask
from pjepa.masking.random import RandomMaskSampler
from pjepa.masking.registry import MASKS, build_mask_sampler

__all__ = [
    "MASKS",
    "build_mask_sampler",
    "MaskBatch",
    "MultiBlockMaskSampler",
    "RandomMaskSampler",
    "apply_masks",
    "block_attention_mask",
    "block_indices",
    "block_masks",
    "block_size",
    "keep_random_subset",
]
