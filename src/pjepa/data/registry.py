"""The dataset registry, in its own module so loaders can import it.

``pjepa.data`` imports every loader module, and each loader module registers
itself here with ``@DATASETS.register("name")``; keeping the registry out of
``__init__`` avoids a circular import.
"""

from __future__ import annotations

from collections.abc import Callable

from pjepa.data.base import ImageDataset
from pjepa.registry import Registry

#: A loader: ``loader(split, path, **options) -> ImageDataset``.
Loader = Callable[..., ImageDataset]

DATASETS: Registry[Loader] = Registry("dataset")
