"""Anti-collapse regularisers: one plug-in kind every method accepts (``reg: {name, options}``).

A regulariser sees the student's output tokens ``z`` (B, N, D) and returns its
weighted loss and metrics. ``level`` says what it constrains: ``token`` treats
every token as a sample (B*N samples: variation between positions inside one
image counts), ``image`` first mean-pools each image's tokens (B samples: only
variation between images counts, which is what evaluation rates).
"""

from pjepa.regularisers import none, sigreg, vicreg  # noqa: F401  (register each)
from pjepa.regularisers.base import LEVELS, REGULARISERS, Regulariser, regularise, samples_at_level

__all__ = ["LEVELS", "REGULARISERS", "Regulariser", "build_regulariser", "regularise", "samples_at_level"]


def build_regulariser(name: str, options: dict) -> Regulariser:
    """The registered regulariser ``name`` built with ``options`` (checked by ``pjepa.checks``)."""
    return REGULARISERS.get(name)(**options)
