"""Predictor heads. A new head is one new file that registers itself with ``@HEADS.register("name")``:
every module of this package is imported below."""

from pjepa.config import migrate_flow_head
from pjepa.errors import ConfigError
from pjepa.heads.base import PredictorHead
from pjepa.heads.registry import HEADS
from pjepa.registry import import_modules

import_modules(__name__, __path__)  # each head module registers itself

__all__ = ["HEADS", "PredictorHead", "build_head"]


def build_head(name: str, cond_dim: int, embed_dim: int, **kwargs) -> PredictorHead:
    """Instantiate the registered head ``name`` (kwargs: its own settings).

    Options in the layout of an earlier release are migrated first (``flow`` with
    ``objective: flow_matching`` builds the ``flow_matching`` head).
    """
    name, kwargs = migrate_flow_head(name, kwargs)
    cls = HEADS.get(name)
    try:
        return cls(cond_dim, embed_dim, **kwargs)
    except TypeError as e:  # an unknown or missing option
        raise ConfigError(f"head {name!r} rejected head.options {kwargs}: {e}") from e
