"""Methods compose encoders, masking, predictor trunk and head into a loss.

A method registers itself in its own module with ``@METHODS.register("name")``; every module of
this package is imported at the end of this file, so a new method is one new file.
"""

from pjepa.methods.base import Batch, Capabilities, HeadMonitor, Method, Monitors, StepOutput
from pjepa.methods.labels import method_label
from pjepa.methods.registry import METHODS
from pjepa.registry import import_modules

__all__ = ["METHODS", "Batch", "Capabilities", "HeadMonitor", "Method", "Monitors", "StepOutput", "build_method",
           "capabilities", "method_label"]


def capabilities(cfg) -> Capabilities:
    """What the method ``cfg.method.name`` has when trained from ``cfg`` (a head, a target encoder), read
    from the config alone: a run's ``Run(path).config`` will do."""
    return METHODS.get(cfg.method.name).capabilities(cfg)


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


# Last: some modules (load, weights) import build_method from this package.
import_modules(__name__, __path__)  # each method module registers itself
