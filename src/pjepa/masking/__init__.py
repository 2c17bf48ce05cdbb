"""Mask samplers (which patches are context, which are targets) and mask ops.

A sampler registers itself in its own module with ``@MASKS.register("name")``; every module
of this package is imported here, so a new sampler is one new file.
"""

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
from pjepa.registry import import_modules

import_modules(__name__, __path__)  # each sampler module registers itself

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
