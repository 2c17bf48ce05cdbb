"""Methods compose encoders, masking, predictor trunk and head into a loss."""

from pjepa.methods import ijepa  # noqa: F401  (registers "ijepa")
from pjepa.methods.base import Method
from pjepa.methods.registry import METHODS

__all__ = ["METHODS", "Method", "build_method"]


def build_method(cfg) -> Method:
    """The registered method ``cfg.train.method`` built from ``cfg``."""
    return METHODS.get(cfg.train.method)(cfg)
