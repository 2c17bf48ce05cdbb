"""The mask-sampler registry: ``mask.name`` picks an entry, ``mask.options`` its keyword options.

An entry is called as ``entry(grid_size, **options)`` and returns a sampler
``(batch_size, generator) -> MaskBatch``.
"""

from __future__ import annotations

from pjepa.masking.multiblock import MultiBlockMaskSampler
from pjepa.masking.random import RandomMaskSampler
from pjepa.registry import Registry

MASKS: Registry = Registry("mask sampler")
MASKS.register("multiblock")(MultiBlockMaskSampler)


@MASKS.register("random")
def random_masks(grid_size: int, mask_ratio: float = 0.75) -> RandomMaskSampler:
    """MAE random masking on a square ``grid_size`` grid: one target "block" of every masked patch."""
    return RandomMaskSampler(grid_size * grid_size, mask_ratio)


def build_mask_sampler(name: str, grid_size: int, options: dict) -> MultiBlockMaskSampler | RandomMaskSampler:
    """The registered sampler ``name`` on a ``grid_size`` grid with ``options`` (already checked)."""
    return MASKS.get(name)(grid_size, **options)
