"""pjepa: Joint-Embedding Predictive Architectures with probabilistic predictors.

The public API (``pjepa.api``), imported on first use so that ``import pjepa`` stays light:

    load_encoder(path)        a run directory or an exported encoder file -> Encoder (a torch module)
    embed(encoder, images)    a batch of images -> (B, D) features, with the encoder's own preprocessing
"""

from typing import Any

__version__ = "0.2.0"
__all__ = ["Encoder", "Preprocessing", "__version__", "embed", "load_encoder"]

_API = ("Encoder", "Preprocessing", "embed", "load_encoder")


def __getattr__(name: str) -> Any:
    if name in _API:
        from pjepa import api

        return getattr(api, name)
    raise AttributeError(f"module 'pjepa' has no attribute {name!r}")
