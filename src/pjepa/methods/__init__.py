"""Methods compose encoders, masking, predictor trunk and head into a loss."""

from pjepa.methods import finetune, ijepa, mae, njepa  # noqa: F401  (register each)
from pjepa.methods.base import Batch, HeadMonitor, Method, Monitors, StepOutput
from pjepa.methods.registry import METHODS

__all__ = ["METHODS", "Batch", "HeadMonitor", "Method", "Monitors", "StepOutput", "build_method"]


def build_method(cfg, init: bool = True) -> Method:
    """The registered method ``cfg.method.name`` built from ``cfg`` and ``cfg.method.options``; with
    ``init`` and ``model.init`` set, its encoders start from that file's weights."""
    method = METHODS.get(cfg.method.name)(cfg, **cfg.method.options)
    if init and cfg.model.init:
        from pjepa.models.timm_format import load_encoder_weights

        for encoder in method.init_encoders():
            load_encoder_weights(encoder, expand_path(cfg.model.init))
    return method


def expand_path(path: str) -> str:
    """``$VARS`` and ``~`` expanded (model.init may name $PJEPA_DATA/... like data.path)."""
    import os

    return os.path.expanduser(os.path.expandvars(path))
