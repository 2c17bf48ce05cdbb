"""Methods compose encoders, masking, predictor trunk and head into a loss."""

from pjepa.methods import ijepa, mae, njepa  # noqa: F401  (register "ijepa", "mae", "njepa")
from pjepa.methods.base import Batch, HeadMonitor, Method, Monitors, StepOutput
from pjepa.methods.registry import METHODS

__all__ = ["METHODS", "Batch", "HeadMonitor", "Method", "Monitors", "StepOutput", "build_method"]


def build_method(cfg) -> Method:
    """The registered method ``cfg.method.name`` built from ``cfg`` and ``cfg.method.options``."""
    return METHODS.get(cfg.method.name)(cfg, **cfg.method.options)
