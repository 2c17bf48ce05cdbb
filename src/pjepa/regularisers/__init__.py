"""Anti-collapse regularisers: one plug-in kind every method accepts (``reg: {name, options}``).

A regulariser sees the student's output tokens ``z`` (B, N, D) and returns its
weighted loss and metrics. ``level`` says what it constrains: ``token`` treats
every token as a sample (B*N samples: variation between positions inside one
image counts), ``image`` first mean-pools each image's tokens (B samples: only
variation between images counts, which is what evaluation rates). A new regulariser is
one new file that registers itself with ``@REGULARISERS.register("name")``.
"""

from pjepa.registry import import_modules
from pjepa.regularisers.base import LEVELS, REGULARISERS, Regulariser, regularise, samples_at_level

import_modules(__name__, __path__)  # each regulariser module registers itself

__all__ = ["LEVELS", "REGULARISERS", "Regulariser", "build_regulariser", "regularise", "samples_at_level"]


def build_regulariser(name: str, options: dict) -> Regulariser:
    """The registered regulariser ``name`` built with ``options`` (checked by ``pjepa.checks``)."""
    return REGULARISERS.get(name)(**options)
