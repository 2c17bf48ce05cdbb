"""The mask-sampler registry: ``mask.name`` picks an entry, ``mask.options`` its keyword options.

An entry is called as ``entry(grid_size, **options)`` and returns a sampler
``(batch_size, generator) -> MaskBatch``. Each sampler's module registers it with
``@MASKS.register("name")``; ``pjepa.masking`` imports every module of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pjepa.registry import Registry

if TYPE_CHECKING:
    import torch

    from pjepa.masking.multiblock import MaskBatch

#: A sampler: ``sampler(batch_size, generator) -> MaskBatch``.
MaskSampler = Callable[[int, "torch.Generator"], "MaskBatch"]

MASKS: Registry = Registry("mask sampler")


def build_mask_sampler(name: str, grid_size: int, options: dict) -> MaskSampler:
    """The registered sampler ``name`` on a ``grid_size`` grid with ``options`` (already checked)."""
    return MASKS.get(name)(grid_size, **options)
